"""The ``disabled`` runtime: a manager that accepts every call and does nothing."""

from __future__ import annotations

from typing import Any, List, Optional

from . import _time
from .types import (
    BackgroundJobManager,
    Interval,
    JobFunc,
    JobMetrics,
    JobRun,
    JobStatus,
    TimezoneArg,
)

__all__ = ["NoOpJobManager"]


class NoOpJobManager(BackgroundJobManager):
    """Accepts every call — even bad input — and does nothing: statuses empty, metrics zero.

    Used when scheduling is disabled (``DISABLE_AUTO_SYNC=1`` or ``BGJOBS_MODE=disabled``),
    e.g. in a one-off script or a test run that imports the app.
    """

    def __init__(self) -> None:
        self._created = _time.utc_now()

    def schedule_job(
        self, id: str, name: str, job: JobFunc, interval: Interval, **policies: Any
    ) -> None:
        return None

    def schedule_cron_job(
        self,
        id: str,
        name: str,
        job: JobFunc,
        cron_expression: str,
        *,
        timezone: TimezoneArg = None,
        **policies: Any,
    ) -> None:
        return None

    def schedule_once(self, id: str, name: str, job: JobFunc, **when_and_policies: Any) -> None:
        return None

    def trigger_job(self, id: str) -> bool:
        """Always ``False``: nothing runs when scheduling is disabled."""
        return False

    def stop_job(self, id: str) -> None:
        return None

    def stop_all_jobs(self, *, wait: bool = False, timeout: Optional[float] = None) -> bool:
        """Always ``True``: nothing ever runs."""
        return True

    def get_job_status(self, id: str) -> Optional[JobStatus]:
        return None

    def get_all_job_statuses(self) -> List[JobStatus]:
        return []

    def get_job_runs(self, id: str, limit: int = 20) -> List[JobRun]:
        return []

    def pause_job(self, id: str) -> None:
        return None

    def resume_job(self, id: str) -> None:
        return None

    def get_job_metrics(self) -> JobMetrics:
        return JobMetrics(0, 0, 0, 0.0, self._created, 0)

    def __repr__(self) -> str:
        return "<NoOpJobManager>"
