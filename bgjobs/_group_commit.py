"""Group commit: one thread writes the state store, many transactions become one.

Every scheduled fire used to cost the store three transactions (claim, start, finish), each
taken by the pool worker running the fire, so ten workers queued on one connection and one
write lock. Here the workers hand their writes to one writer thread instead. Each pass of the
writer takes *everything* queued since the last pass and commits it in one transaction: under
light load a write is committed at once (a batch of one), under a burst hundreds share one
``BEGIN``/``COMMIT``. Run records are *write-behind* (the worker does not wait); a claim waits
for the commit that decides it (:meth:`GroupCommit.call`), since a fire must not run before its
claim is durable. Reads first wait for the writes queued before them (:meth:`GroupCommit.flush`),
so a process always reads what it wrote.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, List, Optional

__all__ = ["GroupCommit", "Write"]

logger = logging.getLogger("bgjobs.store")

WINDOW = 0.005
"""Seconds the writer lets records gather before it writes them, unless someone waits for
one (a claim, a finish someone is waiting for, a read): records of a burst of fires share a
transaction instead of each waking the writer."""

LINGER = 0.003
"""Seconds the writer leaves the file alone after a batch when more writes are already
waiting: back to back, its transactions would starve other processes, whose SQLite busy
handlers only poll the write lock (every 1 to 100 ms)."""


class Write:
    """One write for the writer thread: ``kind`` and ``payload`` are the store's to read.

    ``record``: whether dropping it loses a record (counted in ``dropped_writes``).
    The store sets ``result``; a waiting caller (:meth:`GroupCommit.call`) reads it.
    """

    __slots__ = ("done", "kind", "payload", "record", "result")

    def __init__(self, kind: str, payload: Any, *, record: bool = True) -> None:
        self.kind = kind
        self.payload = payload
        self.record = record
        self.result: object = None
        self.done: Optional[threading.Event] = None


Commit = Callable[[List[Write]], bool]
"""Writes a batch in one transaction, sets each write's ``result``; ``False`` if nothing
was committed (the store is degraded: the batch is dropped and counted)."""


class GroupCommit:
    """The writer thread of one store (started on first use, one per process).

    With ``behind=False`` there is no thread: every write is committed by its caller, alone.
    """

    def __init__(self, commit: Commit, *, wait_timeout: float, behind: bool = True) -> None:
        self._commit = commit
        self._wait_timeout = wait_timeout
        self.behind = behind
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: List[Write] = []
        self._queued = 0  # writes submitted so far
        self._written = 0  # writes the thread has finished with (committed or dropped)
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._closing = False
        self._urgent = False  # someone waits for what is queued: write it without a window

    def reinit_after_fork(self) -> None:
        """In a forked child: the parent writes what was queued; start empty."""
        self._reset()

    def submit(self, write: Write) -> None:
        """Queue ``write``; it is committed shortly, by the writer thread."""
        if self._pid != os.getpid():
            self._reset()
        if not self.behind:
            self._write([write])
            return
        with self._cond:
            if self._thread is None and not self._closing and not self._start():
                self._closing = True  # no thread can start now (interpreter exit): write here
            if not self._closing:
                self._queue.append(write)
                self._queued += 1
                if write.done is not None:
                    self._urgent = True
                if self._urgent or len(self._queue) == 1:  # else the writer is awake already
                    self._cond.notify()
                return
        self._write([write])  # no writer thread: written here (a closed store drops it)

    def write_now(self, write: Write) -> object:
        """Commit ``write`` in the caller's thread, in a transaction of its own; its result."""
        self._write([write])
        return write.result

    def call(self, write: Write) -> object:
        """Queue ``write`` and wait for its batch: its result, or ``None`` when the batch
        was not committed (or the writer did not answer within the wait timeout)."""
        write.done = threading.Event()
        self.submit(write)
        if not self.behind:
            return write.result
        if not write.done.wait(self._wait_timeout):
            logger.warning(
                "the state store's writer did not answer within %.0f s; answering from memory",
                self._wait_timeout,
            )
            return None
        return write.result

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every write submitted before this call is done; ``False`` on timeout."""
        if self._pid != os.getpid() or threading.current_thread() is self._thread:
            return True
        with self._cond:
            target = self._queued
            if self._written < target:
                self._urgent = True
                self._cond.notify()
            return self._cond.wait_for(
                lambda: self._written >= target or self._thread is None,
                self._wait_timeout if timeout is None else timeout,
            )

    def pending(self) -> int:
        """Writes submitted but not yet done."""
        with self._cond:
            return self._queued - self._written

    def close(self, timeout: Optional[float] = None) -> bool:
        """Write what is queued, then stop the thread; ``False`` if it did not finish."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is None or self._pid != os.getpid():
            return True
        thread.join(self._wait_timeout if timeout is None else timeout)
        return not thread.is_alive()

    def _start(self) -> bool:
        """Start the writer thread; ``False`` if none can start. Caller holds ``_cond``."""
        thread = threading.Thread(target=self._loop, name="bgjobs-store", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown" (3.12+)
            return False
        self._thread = thread
        _register_exit_flush(self)
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not (self._urgent or self._closing):
                    self._cond.wait_for(lambda: self._urgent or self._closing, WINDOW)
                batch, self._queue = self._queue, []
                self._urgent = False
                if not batch:  # closing, and everything is written
                    self._thread = None
                    self._cond.notify_all()
                    return
            self._write(batch)
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()
                busy = bool(self._queue)
            if busy:
                time.sleep(LINGER)

    def _write(self, batch: List[Write]) -> None:
        try:
            if not self._commit(batch):
                for w in batch:
                    w.result = None
        except BaseException:  # a bug, not a fault of the file: say so, keep writing
            logger.exception("bgjobs: writing to the state store failed")
            for w in batch:
                w.result = None
        finally:
            for w in batch:
                if w.done is not None:
                    w.done.set()


_writers: weakref.WeakSet[GroupCommit] = weakref.WeakSet()
_exit_registered = False
_registry_lock = threading.Lock()


def _register_exit_flush(writer: GroupCommit) -> None:
    """The writer thread is a daemon (it must never hold the interpreter open), so what is
    queued at exit is written by an ``atexit`` function instead; plain ``atexit`` runs after
    threading's shutdown, i.e. after the managers' own exit hook let running jobs finish."""
    global _exit_registered
    with _registry_lock:
        _writers.add(writer)
        if not _exit_registered:
            _exit_registered = True
            atexit.register(_flush_all_at_exit)


EXIT_FLUSH_TIMEOUT = 3.0
"""Seconds interpreter exit waits, in all, for the writers' queued records."""


def _flush_all_at_exit() -> None:
    with _registry_lock:
        writers = list(_writers)
    deadline = time.monotonic() + EXIT_FLUSH_TIMEOUT
    for writer in writers:
        if not writer.flush(max(0.0, deadline - time.monotonic())):
            # Exit must not hang on a file another process holds: say what is lost.
            logger.warning(
                "bgjobs: %d run record(s) were not written to the state store before exit",
                writer.pending(),
            )


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
