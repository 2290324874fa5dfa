"""bgjobs' ``LocalJobManager``: a chain of absolute-due-time timers per job."""

from __future__ import annotations

from typing import Optional

from bgjobs.local import LocalJobManager

from .base import JobFunc, System


class BGJobsSystem(System):
    name = "bgjobs"
    overlap_protection = True
    reports_skips = True
    grid = "monotonic time of schedule_job() + k * interval (never re-anchored)"

    def __init__(self) -> None:
        self._manager = LocalJobManager()

    def add_interval_job(self, job_id: str, seconds: float, func: JobFunc) -> None:
        self._manager.schedule_job(job_id, job_id, func, seconds)

    def stop(self) -> None:
        self._manager.stop_all_jobs()

    def skips(self) -> Optional[int]:
        return self._manager.get_job_metrics().skipped_executions
