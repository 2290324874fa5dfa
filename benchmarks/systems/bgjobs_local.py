"""bgjobs' ``LocalJobManager``: one waiting thread with a heap of due times and a worker
pool; memory only (``bgjobs``) or with a state directory (``bgjobs-store``)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Optional

from bgjobs.local import LocalJobManager

from .base import STATE_PARENT_ENV, JobFunc, System


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


class BGJobsStoreSystem(BGJobsSystem):
    """The same manager with a fresh state directory: every run recorded in
    ``state.db`` (SQLite), each scheduled fire claimed in it, per-job lock files —
    what an app wired by the factory, the Flask extension or the CLI gets by default."""

    name = "bgjobs-store"

    def __init__(self) -> None:
        parent = os.environ.get(STATE_PARENT_ENV) or None
        self.state_dir = tempfile.mkdtemp(prefix="bgjobs-bench-state-", dir=parent)
        if parent is None:  # run by hand (run_one): clean up ourselves
            atexit.register(shutil.rmtree, self.state_dir, ignore_errors=True)
        self._manager = LocalJobManager(state_dir=self.state_dir)
