"""APScheduler 3.x ``BackgroundScheduler`` with its defaults (10-thread pool,
``max_instances=1``, ``coalesce=True``, ``misfire_grace_time=1``)."""

from __future__ import annotations

import threading
from typing import Any, Optional

from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
)
from apscheduler.schedulers.background import (  # type: ignore[import-untyped]
    BackgroundScheduler,
)

from .base import JobFunc, System


class APSchedulerSystem(System):
    name = "apscheduler"
    overlap_protection = True  # max_instances=1
    reports_skips = True  # EVENT_JOB_MAX_INSTANCES (+ EVENT_JOB_MISSED for misfires)
    grid = "wall-clock datetime.now() in add_job() + interval + k * interval (never re-anchored)"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skips = 0
        self.misfires = 0
        self._scheduler = BackgroundScheduler()
        self._scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._scheduler.start()

    def _on_event(self, event: Any) -> None:
        with self._lock:
            if event.code == EVENT_JOB_MAX_INSTANCES:
                self._skips += 1
            else:
                self.misfires += 1

    def add_interval_job(self, job_id: str, seconds: float, func: JobFunc) -> None:
        self._scheduler.add_job(func, "interval", seconds=seconds, id=job_id)

    def stop(self) -> None:
        self._scheduler.shutdown()  # default wait=True: waits for running jobs

    def skips(self) -> Optional[int]:
        with self._lock:
            return self._skips + self.misfires
