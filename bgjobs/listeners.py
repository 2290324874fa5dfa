"""Listeners: user callbacks told about runs, on a thread of their own.

::

    def alert(run, event):
        notify(f"{run.job_id} {event}: {run.error}")

    manager.add_listener(alert, events=("failed", "timed_out"))

A callback takes the :class:`~bgjobs.types.JobRun` and, if it accepts a second argument,
the event's name. Events: ``started`` (``outcome == "running"``), ``completed``,
``failed``, ``timed_out`` (when the run passes its timeout, while it still runs; its run
record ends ``timed_out`` too), ``skipped`` (a fire that did not run: the job was busy, its
due time passed unrun, or it was later than its ``misfire_grace``; ``outcome ==
"skipped"``, never stored) and ``abandoned`` (its process died). Callbacks are called in
order, one at a time, on the manager's ``bgjobs-listeners`` thread — never on a timer or a
job's thread, so a slow listener delays only other listeners — and one that raises is
logged at ERROR and never breaks a run.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from typing import Callable, Iterable, List, Literal, Optional, Tuple, Union

from .types import JobRun

__all__ = ["EVENTS", "JobEvent", "Listener", "ListenerSet"]

logger = logging.getLogger(__name__)

JobEvent = Literal["started", "completed", "failed", "skipped", "timed_out", "abandoned"]
"""What a listener can be told about."""

EVENTS: Tuple[JobEvent, ...] = (
    "started",
    "completed",
    "failed",
    "skipped",
    "timed_out",
    "abandoned",
)

Listener = Union[Callable[[JobRun], object], Callable[[JobRun, str], object]]
"""``callback(run)`` or ``callback(run, event)``."""

_Entry = Tuple[Callable[..., object], bool, "frozenset[str]"]  # callback, wants event, events
_Item = Union[Tuple[JobRun, "JobEvent", List[_Entry]], threading.Event]


def _wants_event(callback: Callable[..., object]) -> bool:
    """Whether ``callback`` takes ``(run, event)`` rather than ``(run)``; raises
    ``TypeError`` if it can take neither."""
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # some builtins: call with the run alone
        return False
    for args in ((None, None), (None,)):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return len(args) == 2
    raise TypeError(
        f"listener {callback!r} must accept the run, or the run and the event name: "
        "def listener(run, event): ..."
    )


class ListenerSet:
    """A manager's listeners and the thread that calls them."""

    def __init__(self) -> None:
        # Guards entries (replaced, never mutated: readers need no lock) and _thread.
        self._lock = threading.Lock()
        #: (callback, wants the event name, events); empty: nobody listens (test it first).
        self.entries: Tuple[_Entry, ...] = ()
        # Events to deliver, and flush() markers (an Event set when it comes up).
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None

    def add(self, callback: Listener, events: Iterable[str]) -> None:
        if not callable(callback):
            raise TypeError(f"listener must be callable, got {callback!r}")
        if isinstance(events, str):
            events = (events,)
        chosen = frozenset(events)
        unknown = sorted(chosen.difference(EVENTS))
        if unknown or not chosen:
            raise ValueError(
                f"listener events must be some of {', '.join(EVENTS)}, got {sorted(chosen)!r}"
            )
        entry: _Entry = (callback, _wants_event(callback), chosen)
        with self._lock:
            self.entries = (*self.entries, entry)

    def remove(self, callback: Listener) -> bool:
        """Remove every registration of ``callback``; ``True`` if there was one."""
        with self._lock:
            kept = tuple(e for e in self.entries if e[0] != callback)
            removed, self.entries = len(kept) != len(self.entries), kept
        return removed

    def emit(self, event: JobEvent, run: JobRun) -> None:
        """Queue ``event`` for the listeners that want it (returns at once)."""
        targets = [e for e in self.entries if event in e[2]]
        if not targets:
            return
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._loop, name="bgjobs-listeners", daemon=True
                    )
                    try:
                        thread.start()
                    except RuntimeError:  # interpreter exit (3.12+): no thread can start
                        self._deliver(run, event, targets)
                        return
                    self._thread = thread
        self._queue.put((run, event, targets))

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the events queued so far to be delivered."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def reinit_after_fork(self) -> None:
        """In a forked child: the thread is gone; undelivered events go with it."""
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            self._deliver(*item)

    @staticmethod
    def _deliver(run: JobRun, event: JobEvent, targets: List[_Entry]) -> None:
        for callback, wants_event, _ in targets:
            try:
                if wants_event:
                    callback(run, event)
                else:
                    callback(run)
            except Exception:
                logger.error(
                    "listener %r failed on event %r of job %r (run %s)",
                    callback,
                    event,
                    run.job_id,
                    run.run_id,
                    exc_info=True,
                )
