"""A clock that moves only when the test moves it, and timers that follow it.

::

    clock = ManualClock()
    manager = LocalJobManager(clock=clock, env={})
    manager.schedule_job("sync", "Sync", job, 60)
    clock.advance(60)      # the timer thread wakes now and hands the fire to a worker
    assert ran.wait(5)     # the run itself happens on that worker: wait for it, briefly

``monotonic()`` and ``time()`` move together in :meth:`advance`; :meth:`step` moves the wall
clock alone, as NTP or a resume from suspend does. :meth:`wait` is the ``wait`` a
:class:`~bgjobs._local.timers.TimerQueue` takes (``LocalJobManager`` passes it on when its clock
has one): it returns when the condition is notified or when ``advance`` has moved the
monotonic clock by the timeout, never because real seconds passed. So no test sleeps for a
due time, and a timer fires exactly when the test says, however loaded the machine is.

To be ``bgjobs.testing.ManualClock`` one day; it lives in tests/ until then.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, List, Tuple

if TYPE_CHECKING:
    from bgjobs._local.timers import TimerQueue

__all__ = ["ManualClock", "caught_up"]

# advance() wakes a waiter whose deadline is this close: the deadline (the time read, plus
# a due time minus that time) may miss the due time by a rounding error. Waking early is
# harmless: the waiter checks its due time again, exactly.
_EPSILON = 1e-6


class ManualClock:
    """``monotonic()``/``time()`` that move only in :meth:`advance` (and :meth:`step`).

    Starts at ``start`` (Unix seconds, default 2026-09-21T14:13:20Z) with the monotonic
    clock at ``monotonic_start``. Timers compare due times exactly, so move the clock to
    or past them; steps that floats hold exactly (0.25 s, 1 s, not 0.1 s) land on them.
    """

    def __init__(self, start: float = 1_790_000_000.0, *, monotonic_start: float = 1000.0) -> None:
        # Guards _monotonic, _time, _moves and _sleepers. Never held while taking a
        # waiter's condition: a timer queue reads this clock with its condition held.
        self._lock = threading.Lock()
        self._monotonic = float(monotonic_start)
        self._time = float(start)
        self._moves = 0  # how often advance() moved the clock
        self._sleepers: List[Tuple[float, threading.Condition]] = []  # (deadline, condition)
        self._seen = threading.local()  # per thread: _moves when it last read monotonic()

    def monotonic(self) -> float:
        with self._lock:
            self._seen.moves = self._moves
            return self._monotonic

    def time(self) -> float:
        with self._lock:
            return self._time

    def advance(self, seconds: float) -> None:
        """Move both clocks ``seconds`` ahead and wake the waiters whose time has come."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward: advance({seconds!r})")
        with self._lock:
            self._monotonic += seconds
            self._time += seconds
            self._moves += 1
            due = [c for deadline, c in self._sleepers if deadline <= self._monotonic + _EPSILON]
        for condition in due:
            with condition:  # the waiter is inside condition.wait() by now: see wait()
                condition.notify_all()

    def step(self, seconds: float) -> None:
        """Move the wall clock alone (either way), like NTP. Wakes nobody, as a real step
        wakes nobody: a timer queue notices it when it next checks."""
        with self._lock:
            self._time += seconds

    def wait(self, condition: threading.Condition, timeout: float) -> None:
        """Block until ``condition`` is notified or :meth:`advance` has moved the monotonic
        clock ``timeout`` seconds on. Called with ``condition`` held (a timer queue's wait).

        Returns at once if the clock moved since this thread last read it: ``timeout`` was
        computed from that reading, so the caller must look again.
        """
        with self._lock:
            if getattr(self._seen, "moves", None) != self._moves:
                return
            entry = (self._monotonic + timeout, condition)
            self._sleepers.append(entry)
        try:
            # An advance() that wants to wake this thread needs `condition`, which is held
            # until wait() releases it: the notification cannot come too early.
            condition.wait()
        finally:
            with self._lock:
                self._sleepers.remove(entry)

    def sleepers(self) -> int:
        """Threads blocked in :meth:`wait` right now (for diagnostics)."""
        with self._lock:
            return len(self._sleepers)

    def __repr__(self) -> str:
        return f"<ManualClock monotonic={self._monotonic!r} time={self._time!r}>"


def caught_up(timers: TimerQueue, clock: ManualClock, timeout: float = 5.0) -> None:
    """Return once every timer of ``timers`` due by ``clock``'s now has fired and its
    callback has returned: what a "nothing more runs" check needs before it looks.

    A marker timer due now comes up after them; on a one-worker queue it also runs after
    them. (A ``LocalJobManager``'s queue is its ``_timers``; build it with ``max_workers=1``.)
    """
    if timers._max_workers != 1:
        raise ValueError("caught_up() needs a timer queue with max_workers=1")
    marker = threading.Event()
    try:
        timers.call_at(clock.monotonic(), False, marker.set)
    except RuntimeError:  # shut down: no timer fires any more
        return
    if not marker.wait(timeout):
        raise AssertionError(f"the timers did not catch up with {clock!r} in {timeout}s")
