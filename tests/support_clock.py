"""A clock that moves only when the test moves it, and timers that follow it.

::

    clock = ManualClock()
    manager = LocalJobManager(clock=clock, env={})
    manager.schedule_job("sync", "Sync", job, 60)
    clock.advance(60)      # the timer thread wakes now and hands the fire to a worker
    assert ran.wait(5)     # the run itself happens on that worker: wait for it, briefly

``monotonic()`` and ``time()`` move together in :meth:`advance`; :meth:`step` moves the wall
clock alone, as NTP or a resume from suspend does. :meth:`wait` is the ``wait`` a
:class:`~bgjobs.timers.TimerQueue` takes (``LocalJobManager`` passes it on when its clock
has one): it returns when the condition is notified or when ``advance`` has moved the
monotonic clock by the timeout, never because real seconds passed. So no test sleeps for a
due time, and a timer fires exactly when the test says, however loaded the machine is.

To be ``bgjobs.testing.ManualClock`` one day; it lives in tests/ until then.
"""

from __future__ import annotations

import threading
from typing import List, Tuple

__all__ = ["ManualClock"]

# A waiter whose deadline is this close wakes: a due time minus the time read, plus that
# time again, may miss the due time by a rounding error.
_EPSILON = 1e-6


class ManualClock:
    """``monotonic()``/``time()`` that move only in :meth:`advance` (and :meth:`step`).

    Starts at ``start`` (Unix seconds, default 2026-09-21T13:46:40Z) with the monotonic
    clock at ``monotonic_start``.
    """

    def __init__(self, start: float = 1_790_000_000.0, *, monotonic_start: float = 1000.0) -> None:
        # Guards _monotonic, _time and _sleepers. Never held while taking a waiter's
        # condition: a timer queue reads this clock with its condition held.
        self._lock = threading.Lock()
        self._monotonic = float(monotonic_start)
        self._time = float(start)
        self._sleepers: List[Tuple[float, threading.Condition]] = []  # (deadline, condition)
        self._last_read = threading.local()  # per thread: the monotonic time it last read

    def monotonic(self) -> float:
        with self._lock:
            self._last_read.value = self._monotonic
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
            due = [c for deadline, c in self._sleepers if deadline <= self._monotonic + _EPSILON]
        for condition in due:
            with condition:  # the waiter is inside condition.wait() by now: see wait()
                condition.notify_all()

    def step(self, seconds: float) -> None:
        """Move the wall clock alone (either way), like NTP; wakes nobody, as a real step
        wakes nobody: a timer queue notices it when it next checks."""
        with self._lock:
            self._time += seconds

    def wait(self, condition: threading.Condition, timeout: float) -> None:
        """Block until ``condition`` is notified or the monotonic clock has moved ``timeout``
        seconds past what this thread last read from it. Called with ``condition`` held.

        Counting from the last reading, not from now, is what makes a concurrent
        :meth:`advance` safe: the caller computed ``timeout`` from that reading, so time that
        passed since counts.
        """
        with self._lock:
            start = getattr(self._last_read, "value", self._monotonic)
            deadline = start + timeout
            if deadline <= self._monotonic + _EPSILON:
                return
            entry = (deadline, condition)
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
        return f"<ManualClock monotonic={self._monotonic:.6f} time={self._time:.6f}>"
