"""A thread-safe aggregator of run counts and durations across all jobs of a manager."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Callable, Optional

from . import _time
from .types import JobMetrics

__all__ = ["MetricsAggregator"]


def _utcnow() -> datetime:
    return _time.utc_now()


class MetricsAggregator:
    """Counts runs, failures, skips and total duration; hands out frozen snapshots.

    Every update is a few integer additions under one lock, so the counts always add
    up (``successful + failed == total``) however many threads record at once.
    """

    def __init__(self, now: Optional[Callable[[], datetime]] = None) -> None:
        self._now = now or _utcnow
        # Guards every counter below; held only for arithmetic, never across a job.
        self._metrics_lock = threading.Lock()
        self._successful = 0
        self._failed = 0
        self._skipped = 0
        self._timed_out = 0
        self._starved = 0
        self._total_duration = 0.0
        self._last_cleanup = self._now()

    def record_run(self, duration: float, *, succeeded: bool, timed_out: bool = False) -> None:
        """Count one finished run (successful or not; past its timeout) and its duration."""
        with self._metrics_lock:
            if succeeded:
                self._successful += 1
            else:
                self._failed += 1
            self._total_duration += duration
            if timed_out:
                self._timed_out += 1

    def record_skip(self, count: int = 1) -> None:
        """Count ``count`` run attempts that did not happen (the job was still running)."""
        with self._metrics_lock:
            self._skipped += count

    def record_starved(self, count: int = 1) -> None:
        """Count ``count`` scheduled fires that waited too long for a free worker."""
        with self._metrics_lock:
            self._starved += count

    def reinit_after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held mid-update)."""
        self._metrics_lock = threading.Lock()

    def snapshot(self) -> JobMetrics:
        """The current totals as an immutable :class:`~bgjobs.types.JobMetrics`."""
        with self._metrics_lock:
            total = self._successful + self._failed
            return JobMetrics(
                total_executions=total,
                successful_jobs=self._successful,
                failed_jobs=self._failed,
                average_job_duration=self._total_duration / total if total else 0.0,
                last_cleanup=self._last_cleanup,
                skipped_executions=self._skipped,
                timed_out_executions=self._timed_out,
                starved_fires=self._starved,
            )
