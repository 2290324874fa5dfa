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
import collections
import logging
import math
import os
import threading
import time
import weakref
from typing import Any, Callable, Deque, List, Optional

__all__ = ["GroupCommit", "Write"]

logger = logging.getLogger("bgjobs.store")

WINDOW = 0.1
"""Seconds the writer lets records gather before it writes them, unless someone waits for
one (a fire whose claim is undecided, a finish someone is waiting for, a read): the records
of many fires share a transaction instead of each waking the writer. Measured with 1,000 jobs
every second (store CPU as a multiple of memory-only): 5 ms gave batches of a few fires and
1.8-2.0x (the writer, busy every few milliseconds, also took the GIL from every lock-file
call of ``schedule_job``); 50 ms 1.6x; 100 ms 1.4-1.5x. The cost: a process killed with
SIGKILL loses at most this long of scheduled-run records (see the README)."""

LINGER = 0.003
"""Seconds the writer leaves the file alone after a batch when more writes are already
waiting: back to back, its transactions would starve other processes, whose SQLite busy
handlers only poll the write lock (every 1 to 100 ms)."""


MAX_BATCH = 2000
"""Writes per transaction at most: a longer one would hold the file's write lock past what
other processes' busy handlers wait between polls."""

QUEUE_LIMIT = 20000
"""Writes queued at most: past that, a submitter waits for the writer (the file is slower
than the records come, and memory must not grow without bound)."""


class Write:
    """One write for the writer thread: ``kind`` and ``payload`` are the store's to read.

    ``record``: whether dropping it loses a record (counted in ``dropped_writes``).
    The store sets ``result``; a waiting caller (:meth:`GroupCommit.call`) reads it.
    """

    __slots__ = ("done", "kind", "payload", "record", "result", "settled")

    def __init__(self, kind: str, payload: Any, *, record: bool = True) -> None:
        self.kind = kind
        self.payload = payload
        self.record = record
        self.result: object = None
        self.done: Optional[threading.Event] = None
        #: Its batch was written (or dropped): ``result`` is final (see GroupCommit.wait).
        self.settled = False


Commit = Callable[[List[Write]], bool]
"""Writes a batch in one transaction, sets each write's ``result``; ``False`` if nothing
was committed (the store is degraded: the batch is dropped and counted)."""


class GroupCommit:
    """The writer thread of one store (started on first use, one per process).

    With ``behind=False`` there is no thread: every write is committed by its caller, alone.

    Queueing takes no lock: a pool worker appends to a deque (atomic under the GIL) and
    touches the condition only to wake an idle writer or hurry one that gathers. A lock
    taken on every submit was the most contended lock of a busy process: its holder, the
    writer, was often descheduled inside it while ten workers queued.
    """

    def __init__(self, commit: Commit, *, wait_timeout: float, behind: bool = True) -> None:
        self._commit = commit
        self._wait_timeout = wait_timeout
        self.behind = behind
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: Deque[Write] = collections.deque()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._closing = False
        self._urgent = False  # someone waits for what is queued: write it without a window
        self._idle = False  # the writer waits for a first write (it needs a notify)
        self._in_flight = 0  # writes of the batch being written
        # When the gathering must end at the latest (monotonic): the earliest ``within`` of
        # the writes queued, if sooner than the window's end.
        self._deadline = math.inf
        # wait() without an event per write: waiters count themselves in, and the writer
        # wakes them after a batch only when there are any (claims made ahead rarely wait).
        self._settled = threading.Condition(threading.Lock())
        self._waiters = 0

    def reinit_after_fork(self) -> None:
        """In a forked child: the parent writes what was queued; start empty."""
        self._reset()

    def submit(
        self, write: Write, *, urgent: Optional[bool] = None, within: Optional[float] = None
    ) -> None:
        """Queue ``write``; it is committed shortly, by the writer thread. ``urgent`` (by
        default: whether someone waits for it, ``write.done``) skips the gathering window;
        ``within``: seconds by which it must be committed, if sooner than the window ends."""
        if self._pid != os.getpid():
            self._reset()
        if not self.behind:
            self._write([write])
            return
        if self._thread is None or self._closing:
            with self._cond:
                if self._thread is None and not self._closing and not self._start():
                    self._closing = True  # no thread can start now (interpreter exit)
                if self._thread is None:
                    self._write([write])  # no writer thread: written here (closed: dropped)
                    return
        if len(self._queue) >= QUEUE_LIMIT and write.kind != _MARKER:
            self.flush()  # the file is slower than the records come: wait for it
        self._queue.append(write)
        if write.done is not None if urgent is None else urgent:
            with self._cond:
                self._urgent = True
                self._cond.notify()
        elif within is not None:
            by = time.monotonic() + within
            with self._cond:
                if by < self._deadline:  # the writer waits for less than it planned
                    self._deadline = by
                    self._cond.notify()
        elif self._idle:  # read after the append: see _loop for why no wake-up is lost
            with self._cond:
                self._cond.notify()
        if self._closing:
            self._write_stranded()

    def _write_stranded(self) -> None:
        """A write queued as the writer exited (closing): write what it left, here."""
        with self._cond:
            if self._thread is not None:
                return  # still running: it drains the queue before it exits
            batch = self._drain()
        self._write_batch(batch)

    def _write_batch(self, batch: List[Write]) -> None:
        """Write ``batch`` (flush markers only mark: they are done once it is)."""
        writes = [w for w in batch if w.kind != _MARKER]
        if writes:
            self._write(writes)
        for w in batch:
            if w.kind == _MARKER and w.done is not None:
                w.done.set()

    def _drain(self, limit: Optional[int] = None) -> List[Write]:
        batch: List[Write] = []
        queue = self._queue
        while queue and (limit is None or len(batch) < limit):
            batch.append(queue.popleft())
        return batch

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

    def wait(self, write: Write, timeout: Optional[float] = None) -> bool:
        """Wait until ``write`` (submitted earlier) is settled, hurrying its batch if it
        still gathers; ``False`` if that took longer than ``timeout``."""
        if write.settled:
            return True
        with self._cond:
            if not write.settled:
                self._urgent = True
                self._cond.notify()
        limit = self._wait_timeout if timeout is None else timeout
        with self._settled:
            self._waiters += 1
            try:
                if self._settled.wait_for(lambda: write.settled, limit):
                    return True
            finally:
                self._waiters -= 1
        logger.warning(
            "the state store's writer did not answer within %.0f s; answering from memory",
            limit,
        )
        return False

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every write submitted before this call is done; ``False`` on timeout."""
        if self._pid != os.getpid() or threading.current_thread() is self._thread:
            return True
        if self._thread is None and not self._queue:
            return True
        # A marker behind everything queued so far: the writer takes the queue in order,
        # so once the marker's batch is done, so is every write before it.
        marker = Write(_MARKER, None, record=False)
        marker.done = threading.Event()
        self.submit(marker)
        return marker.done.wait(self._wait_timeout if timeout is None else timeout)

    def pending(self) -> int:
        """Writes submitted but not yet done."""
        return sum(1 for w in list(self._queue) if w.kind != _MARKER) + self._in_flight

    def close(self, timeout: Optional[float] = None) -> bool:
        """Write what is queued, then stop the thread; ``False`` if it did not finish."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is None or self._pid != os.getpid():
            self._write_stranded()
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
        queue = self._queue
        while True:
            with self._cond:
                while not queue and not self._closing:
                    # Set before the last look at the queue: a submit that appends after
                    # that look reads _idle afterwards and notifies (we hold the lock
                    # until wait() releases it, so the notify comes after).
                    self._idle = True
                    if queue:
                        break
                    self._cond.wait()
                self._idle = False
                end = time.monotonic() + WINDOW
                while not (self._urgent or self._closing):
                    left = min(end, self._deadline) - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)  # a submit may hurry it, or bring the end forward
                self._urgent = False
                batch = self._drain(MAX_BATCH)
                if not queue:  # a deadline left in the queue (MAX_BATCH) holds on
                    self._deadline = math.inf
                if not batch and self._closing:  # everything is written
                    self._thread = None
                    self._cond.notify_all()
                    return
                self._in_flight = len(batch)
            began = time.monotonic()
            self._write_batch(batch)
            self._in_flight = 0
            if queue and not self._closing:
                # At least as long as it held the write lock: other processes' busy
                # handlers poll for it, and need gaps as long as the holds to land in.
                time.sleep(max(LINGER, time.monotonic() - began))

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
                w.settled = True
                if w.done is not None:
                    w.done.set()
            # Read after every write is settled: a waiter counts itself in before it looks.
            if self._waiters:
                with self._settled:
                    self._settled.notify_all()


_MARKER = "flush"
"""The kind of a :meth:`GroupCommit.flush` marker: never handed to the store."""


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
