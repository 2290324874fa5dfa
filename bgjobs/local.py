"""The local runtime: jobs run in this process on chains of ``threading.Timer``.

Each job has at most one armed timer. When it fires, the tick first arms the next
timer — for the schedule's next due time after the one that just fired, so runs never
drift — and then runs the job through the execution core. A run that outlasts its
interval makes the following ticks find the job busy: they are skipped and counted, never
queued. Timers are daemon threads named ``bgjobs-<job id>``, so an idle schedule never
keeps the interpreter alive.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from .execution import Job, ManagedJobs
from .schedules import Clock

__all__ = ["LocalJobManager"]

logger = logging.getLogger(__name__)

# Wall-clock (cron) waits re-read the clock at least this often, so a clock that is
# stepped (NTP, suspend/resume) delays a cron job by at most this much.
_WALL_CLOCK_RECHECK = 60.0


class _Tick(threading.Timer):
    """A Timer that fires at an absolute due time rather than after a relative delay.

    Waiting for ``due - now`` measured inside the thread keeps the thread's own start-up
    time out of the lateness, and a wall-clock due time is re-checked periodically.
    """

    def __init__(self, manager: LocalJobManager, job: Job, due: float) -> None:
        super().__init__(0.0, manager._fire, args=(job, due))
        self.daemon = True
        self.name = f"bgjobs-{job.id}"
        self._due = due
        self._read = (
            manager._clock.time
            if job.schedule and job.schedule.wall_clock
            else (manager._clock.monotonic)
        )
        self._cap = _WALL_CLOCK_RECHECK if job.schedule and job.schedule.wall_clock else None

    def run(self) -> None:
        while True:
            remaining = self._due - self._read()
            if remaining <= 0:
                break
            if self._cap is not None:
                remaining = min(remaining, self._cap)
            if self.finished.wait(remaining):
                return  # cancelled
        if not self.finished.is_set():
            self.function(*self.args)
        self.finished.set()


class LocalJobManager(ManagedJobs):
    """Runs jobs in-process on timer chains, with per-job overlap locks and metrics.

    ``clock`` replaces the time source used for due times (tests); ``env`` is where
    ``BGJOBS_TIMEZONE`` is read (default ``os.environ``).
    """

    def __init__(
        self,
        *,
        clock: Optional[Clock] = None,
        env: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(clock=clock, env=env)

    def _now(self, job: Job) -> float:
        assert job.schedule is not None
        return self._clock.time() if job.schedule.wall_clock else self._clock.monotonic()

    def _start(self, job: Job) -> None:
        assert job.schedule is not None
        self._arm(job, job.schedule.first_due(self._now(job)))

    def _arm(self, job: Job, due: float) -> None:
        tick = _Tick(self, job, due)
        now = self._now(job)
        wall = self._clock.time() + (due - now) if not job.schedule.wall_clock else due  # type: ignore[union-attr]
        with job.state_lock:
            if job.stopped:
                return
            job.handle = tick
            job.next_run = datetime.fromtimestamp(wall, timezone.utc)
        tick.start()

    def _cancel(self, job: Job) -> None:
        with job.state_lock:
            tick, job.handle = job.handle, None
        if tick is not None:
            tick.cancel()

    def _fire(self, job: Job, due: float) -> None:
        assert job.schedule is not None
        with job.state_lock:
            if job.stopped:
                return
        nxt, missed = job.schedule.next_due(due, self._now(job))
        for _ in range(missed):
            self._skip(job)
        self._arm(job, nxt)
        self.run(job)
