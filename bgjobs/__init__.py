"""bgjobs — recurring background jobs for ordinary synchronous Python.

::

    from bgjobs import JobRegistry, initialize_background_jobs

    jobs = JobRegistry()

    @jobs.interval("heartbeat", "Heartbeat", seconds=30)
    def heartbeat():
        print("still alive")

    @jobs.cron("report", "Daily report", "0 9 * * *", timezone="Europe/Paris")
    def report(): ...

    manager = initialize_background_jobs(jobs)   # runtime chosen from the environment
    manager.get_all_job_statuses()

One :class:`BackgroundJobManager` interface, four runtimes: ``local`` (threads in this
process), ``trigger-dev`` (schedules on Trigger.dev), ``vercel`` (Vercel Cron calls an
endpoint) and ``disabled``. See the README for configuration.

Names are loaded on first use, so ``import bgjobs`` costs almost nothing and never
imports ``requests``.
"""

from __future__ import annotations

# No runtime imports at all, not even typing: this module's cost is `import bgjobs`'s.
TYPE_CHECKING = False  # type checkers treat this name as typing.TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from typing import Any, Dict, List

    from .config import get_scheduling_mode, get_trigger_dev_config, should_use_trigger_dev
    from .errors import (
        AppLoadError,
        BGJobsError,
        InvalidScheduleError,
        JobNotFoundError,
        TriggerDevError,
        UnsafeLockDirError,
        UsageError,
    )
    from .factory import (
        create_job_manager,
        get_job_manager,
        initialize_background_jobs,
        reset_job_manager,
    )
    from .local import LocalJobManager
    from .noop import NoOpJobManager
    from .registry import JobDefinition, JobRegistry
    from .running import ActiveRun, current_run
    from .triggerdev import TriggerDevJobManager
    from .types import (
        BackgroundJobManager,
        JobMetrics,
        JobRun,
        JobStatus,
        JobStatusType,
        SchedulingMode,
        TriggerDevConfig,
    )
    from .vercel import VercelJobManager

# Public name -> submodule that defines it.
_EXPORTS: Dict[str, str] = {
    "get_scheduling_mode": "config",
    "get_trigger_dev_config": "config",
    "should_use_trigger_dev": "config",
    "AppLoadError": "errors",
    "BGJobsError": "errors",
    "InvalidScheduleError": "errors",
    "JobNotFoundError": "errors",
    "TriggerDevError": "errors",
    "UnsafeLockDirError": "errors",
    "UsageError": "errors",
    "create_job_manager": "factory",
    "get_job_manager": "factory",
    "initialize_background_jobs": "factory",
    "reset_job_manager": "factory",
    "LocalJobManager": "local",
    "NoOpJobManager": "noop",
    "JobDefinition": "registry",
    "JobRegistry": "registry",
    "ActiveRun": "running",
    "current_run": "running",
    "TriggerDevJobManager": "triggerdev",
    "BackgroundJobManager": "types",
    "JobMetrics": "types",
    "JobRun": "types",
    "JobStatus": "types",
    "JobStatusType": "types",
    "SchedulingMode": "types",
    "TriggerDevConfig": "types",
    "VercelJobManager": "vercel",
}

__all__ = [
    "ActiveRun",
    "AppLoadError",
    "BGJobsError",
    "BackgroundJobManager",
    "InvalidScheduleError",
    "JobDefinition",
    "JobMetrics",
    "JobNotFoundError",
    "JobRegistry",
    "JobRun",
    "JobStatus",
    "JobStatusType",
    "LocalJobManager",
    "NoOpJobManager",
    "SchedulingMode",
    "TriggerDevConfig",
    "TriggerDevError",
    "TriggerDevJobManager",
    "UnsafeLockDirError",
    "UsageError",
    "VercelJobManager",
    "create_job_manager",
    "current_run",
    "get_job_manager",
    "get_scheduling_mode",
    "get_trigger_dev_config",
    "initialize_background_jobs",
    "reset_job_manager",
    "should_use_trigger_dev",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bgjobs' has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", None, None, [name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
