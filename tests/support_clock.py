"""The suite's manual clock: :class:`bgjobs.testing.ManualClock`, started where the suite's
tests expect it, and a helper for managers that run on threads.

::

    clock = ManualClock()
    manager = LocalJobManager(clock=clock, env={})
    manager.schedule_job("sync", "Sync", job, 60)
    clock.advance(60)      # the timer thread wakes now and hands the fire to a worker
    assert ran.wait(5)     # the run itself happens on that worker: wait for it, briefly

``monotonic()`` and ``time()`` move together in :meth:`advance`; :meth:`step` moves the wall
clock alone, as NTP or a resume from suspend does. A ``LocalJobManager``'s timer thread waits
through the clock's :meth:`wait`: it wakes when ``advance`` has moved the monotonic clock by
the timeout, never because real seconds passed. So no test sleeps for a due time, and a
timer fires exactly when the test says, however loaded the machine is. (A
``bgjobs.testing.ManualJobManager`` needs no thread at all: ``advance`` runs its fires.)
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from bgjobs import testing

if TYPE_CHECKING:
    from bgjobs._local.timers import TimerQueue

__all__ = ["ManualClock", "caught_up"]


class ManualClock(testing.ManualClock):
    """:class:`bgjobs.testing.ManualClock` starting at 2026-09-21T14:13:20Z by default."""

    def __init__(self, start: float = 1_790_000_000.0, *, monotonic_start: float = 1000.0) -> None:
        super().__init__(start, monotonic_start=monotonic_start)


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
