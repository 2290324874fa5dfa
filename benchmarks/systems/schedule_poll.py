"""``schedule`` driven the documented way: a thread calling ``run_pending()`` then sleeping
``poll`` seconds (1 ms and 10 ms variants). Jobs run one after another on that thread."""

from __future__ import annotations

import threading
import time
from typing import Dict, Optional

import schedule

from .base import JobFunc, System


class SchedulePollSystem(System):
    name = "schedule"
    overlap_protection = True  # by construction: one thread runs every job, in turn
    reports_skips = False
    grid = (
        "re-anchored after every run: next = datetime.now() after the run + interval "
        "(drifts by design)"
    )

    def __init__(self, poll: float) -> None:
        self._poll = poll
        self._scheduler = schedule.Scheduler()
        self._jobs: Dict[str, schedule.Job] = {}
        self._running = True
        # Wall-clock (naive local datetime) -> monotonic, for own_due().
        self._offset = time.time() - time.monotonic()
        self._thread = threading.Thread(target=self._drive, name="schedule-driver", daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        run_pending = self._scheduler.run_pending
        while self._running:
            run_pending()
            time.sleep(self._poll)

    def add_interval_job(self, job_id: str, seconds: float, func: JobFunc) -> None:
        # schedule annotates interval as int, but a float works (timedelta(seconds=...)).
        self._jobs[job_id] = self._scheduler.every(seconds).seconds.do(func)  # type: ignore[arg-type]

    def stop(self) -> None:
        self._running = False
        self._thread.join()
        self._scheduler.clear()

    def own_due(self, job_id: str) -> Optional[float]:
        next_run = self._jobs[job_id].next_run  # still this run's due time while it runs
        if next_run is None:
            return None
        return next_run.timestamp() - self._offset
