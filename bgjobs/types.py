"""Public types of the bgjobs contract: statuses, metrics, configuration and the manager ABC.

Everything here is a plain value or an interface; behaviour lives in the modules named
for it (``execution``, ``local``, ``triggerdev`` ...).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, Awaitable, Callable, Dict, List, Literal, Optional, TypeVar, Union

from ._trigger_keys import key_environment, schedule_scope

__all__ = [
    "BackgroundJobManager",
    "Interval",
    "JobFunc",
    "JobMetrics",
    "JobStatus",
    "JobRun",
    "JobStatusType",
    "RunOutcome",
    "RunTrigger",
    "SchedulingMode",
    "TimezoneArg",
    "TriggerDevConfig",
]

JobStatusType = Literal["running", "completed", "failed", "scheduled", "stopped", "paused"]
"""Lifecycle: scheduled → running → completed | failed → running …; stopped; paused
(host-wide, until resumed)."""

RunTrigger = Literal["schedule", "manual", "http", "cli", "remote"]
"""What started a run: a timer, ``trigger_job``, an HTTP dispatch, ``bgjobs exec``, or
Trigger.dev (a remote dispatch)."""

RunOutcome = Literal["running", "completed", "failed", "abandoned", "timed_out", "skipped"]
"""How a run ended; ``abandoned``: its process died while it ran; ``timed_out``: it ran past
its ``timeout`` (however it ended). ``skipped`` is seen only by listeners: a fire that did
not run (never stored)."""

SchedulingMode = Literal["trigger-dev", "vercel", "local", "disabled"]
"""Which runtime the factory builds (see :func:`bgjobs.config.get_scheduling_mode`)."""

JobFunc = Callable[[], Union[Any, Awaitable[Any]]]
"""A job: any callable taking no arguments. An ``async def`` function is accepted too."""

Interval = Union[int, float, timedelta]
"""An interval in seconds, or a :class:`datetime.timedelta`."""

TimezoneArg = Union[str, tzinfo, None]
"""An IANA timezone name (``"Europe/Paris"``), a ``tzinfo``, or ``None`` for the default."""


DEFAULT_TRIGGER_DEV_API_URL = "https://api.trigger.dev"

TRIGGER_DEV_ENVIRONMENTS = ("development", "staging", "production", "preview")
"""The values ``TRIGGER_DEV_ENVIRONMENT`` may take."""


def _is_http_url(url: Optional[str]) -> bool:
    """An absolute ``http``/``https`` URL with a host."""
    if not url:
        return False
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


_M = TypeVar("_M", bound="BackgroundJobManager")


def _iso(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class JobStatus:
    """An immutable snapshot of one job.

    ``last_run`` is when the last run *started*; ``next_run`` is ``None`` when nothing is
    scheduled (stopped, or a runtime whose schedule lives elsewhere and is not known yet).
    ``error`` is set only while ``status == "failed"``: ``"ExceptionType: message"``.
    """

    id: str
    name: str
    status: JobStatusType
    last_run: Optional[datetime] = None
    next_run: Optional[datetime] = None
    duration: float = 0.0
    error: Optional[str] = None
    schedule: str = ""
    """Human description of the schedule: ``"every 300s"``, ``"cron 0 9 * * * (UTC)"``."""
    runs: int = 0
    """Completed runs of this job (successful or failed)."""
    failures: int = 0
    skips: int = 0
    """Run attempts refused because this job was still running."""
    runner: Optional[str] = None
    """Which process runs this schedule when that is not simply this one (multi-process
    modes): e.g. ``"this process (pid 42)"`` or ``"another process (pid 17)"``."""
    last_sync_error: Optional[str] = None
    """Runtimes that register schedules remotely: why the last registration failed."""
    last_success: Optional[datetime] = None
    """When the last successful run started."""
    last_failure: Optional[datetime] = None
    """When the last failed run started."""
    last_error: Optional[str] = None
    """The last failure's error, kept after later successes (unlike ``error``)."""
    running_pid: Optional[int] = None
    """The process running the job right now, when a state store knows it."""
    timed_out: bool = False
    """The run going on now has passed the job's ``timeout`` (it still runs: threads are
    never killed), or the last run ended ``timed_out``."""
    waiting_since: Optional[datetime] = None
    """Local runtime: a due fire of this job has waited since then for a free worker
    (every worker is busy); ``None`` when none waits."""
    starved_fires: int = 0
    """Local runtime, this process: fires of this job that waited longer than
    ``bgjobs.local.STARVED_AFTER`` seconds for a free worker."""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict: snake_case keys, ISO 8601 UTC timestamps."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "last_run": _iso(self.last_run),
            "next_run": _iso(self.next_run),
            "duration": self.duration,
            "error": self.error,
            "schedule": self.schedule,
            "runs": self.runs,
            "failures": self.failures,
            "skips": self.skips,
            "runner": self.runner,
            "last_sync_error": self.last_sync_error,
            "last_success": _iso(self.last_success),
            "last_failure": _iso(self.last_failure),
            "last_error": self.last_error,
            "running_pid": self.running_pid,
            "timed_out": self.timed_out,
            "waiting_since": _iso(self.waiting_since),
            "starved_fires": self.starved_fires,
        }


@dataclass(frozen=True)
class JobRun:
    """One run of a job, as the run history keeps it (newest first in listings).

    ``scheduled_for`` is the due time of a scheduled fire (``None`` for other triggers);
    ``finished`` and ``duration`` are ``None`` while it runs; ``traceback`` holds the last
    lines of a failure's traceback; ``attempt`` counts from 1 (retries add to it).
    """

    run_id: str
    job_id: str
    trigger: RunTrigger
    started: datetime
    scheduled_for: Optional[datetime] = None
    finished: Optional[datetime] = None
    duration: Optional[float] = None
    outcome: RunOutcome = "running"
    error: Optional[str] = None
    traceback: Optional[str] = None
    attempt: int = 1
    pid: int = 0
    host: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict: snake_case keys, ISO 8601 UTC timestamps."""
        return {
            "run_id": self.run_id,
            "job_id": self.job_id,
            "trigger": self.trigger,
            "scheduled_for": _iso(self.scheduled_for),
            "started": self.started.isoformat(),
            "finished": _iso(self.finished),
            "duration": self.duration,
            "outcome": self.outcome,
            "error": self.error,
            "traceback": self.traceback,
            "attempt": self.attempt,
            "pid": self.pid,
            "host": self.host,
        }


@dataclass(frozen=True)
class JobMetrics:
    """Aggregate counters over every job of a manager since it was created.

    ``total_executions`` counts runs, not jobs; ``average_job_duration`` is the mean over
    all runs in seconds; ``skipped_executions`` counts run attempts refused because the
    job was still running (overlap protection), which are not executions.
    """

    total_executions: int
    successful_jobs: int
    failed_jobs: int
    average_job_duration: float
    last_cleanup: datetime
    skipped_executions: int = 0
    timed_out_executions: int = 0
    """Runs of this process that ran past their job's ``timeout`` (also in ``failed_jobs``)."""
    starved_fires: int = 0
    """Local runtime, this process: scheduled fires that waited longer than
    ``bgjobs.local.STARVED_AFTER`` seconds for a free worker (the pool was full)."""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict: snake_case keys, ISO 8601 UTC timestamps."""
        return {
            "total_executions": self.total_executions,
            "successful_jobs": self.successful_jobs,
            "failed_jobs": self.failed_jobs,
            "average_job_duration": self.average_job_duration,
            "last_cleanup": self.last_cleanup.isoformat(),
            "skipped_executions": self.skipped_executions,
            "timed_out_executions": self.timed_out_executions,
            "starved_fires": self.starved_fires,
        }


@dataclass(frozen=True)
class TriggerDevConfig:
    """Trigger.dev settings as read by :func:`bgjobs.config.get_trigger_dev_config`.

    ``environment`` defaults to the one the secret key names by its prefix (``tr_dev_``
    development, ``tr_stg_`` staging, ``tr_prod_`` production, ``tr_preview_`` preview),
    else ``development``; an explicit value the key contradicts makes the config unusable
    (:attr:`problem` says why). ``branch`` is the preview (or development) branch, sent as
    ``x-trigger-branch``; a preview key needs one. ``settings_given`` records whether any
    Trigger.dev variable was present at all, which is what separates "partially
    configured" from "not configured". The API key is kept out of ``repr`` so the object
    can be logged.
    """

    enabled: bool = False
    api_key: Optional[str] = field(default=None, repr=False)
    api_url: str = DEFAULT_TRIGGER_DEV_API_URL
    environment: str = ""
    settings_given: bool = False
    branch: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.environment:
            derived = key_environment(self.api_key) or "development"
            object.__setattr__(self, "environment", derived)

    @property
    def problem(self) -> Optional[str]:
        """Why this config is not fully configured, in one sentence; ``None`` if it is."""
        if not self.api_key:
            return "TRIGGER_DEV_API_KEY (or TRIGGER_SECRET_KEY) is not set"
        if not _is_http_url(self.api_url):
            return f"TRIGGER_DEV_API_URL={self.api_url!r} is not an http(s) URL"
        if self.environment not in TRIGGER_DEV_ENVIRONMENTS:
            return (
                f"TRIGGER_DEV_ENVIRONMENT={self.environment!r} is not one of "
                f"{', '.join(TRIGGER_DEV_ENVIRONMENTS)}"
            )
        of_key = key_environment(self.api_key)
        if of_key is not None and of_key != self.environment:
            return (
                f"TRIGGER_DEV_ENVIRONMENT={self.environment!r} does not match the API key, "
                f"which belongs to {of_key} (by its prefix); remove TRIGGER_DEV_ENVIRONMENT "
                f"or use the {self.environment} environment's secret key"
            )
        if self.environment == "preview" and not self.branch:
            return (
                "a preview environment's key needs the branch: set TRIGGER_PREVIEW_BRANCH "
                "(Vercel's VERCEL_GIT_COMMIT_REF is used when set)"
            )
        return None

    @property
    def scope(self) -> str:
        """The ``<scope>`` of this environment's schedule keys ``bgjobs:<scope>:<job id>``
        (see :func:`bgjobs._trigger_keys.schedule_scope`)."""
        return schedule_scope(self.environment, self.api_key, self.branch)

    @property
    def is_fully_configured(self) -> bool:
        """An API key is present, the API URL is a valid http(s) URL, the environment is
        known and agrees with the key, and a preview key has its branch."""
        return self.problem is None

    @property
    def is_partially_configured(self) -> bool:
        """Some Trigger.dev setting was given, but not enough to use it."""
        return self.settings_given and not self.is_fully_configured

    def __repr__(self) -> str:
        key = "'***'" if self.api_key else "None"
        branch = f", branch={self.branch!r}" if self.branch else ""
        return (
            f"TriggerDevConfig(enabled={self.enabled!r}, api_key={key}, "
            f"api_url={self.api_url!r}, environment={self.environment!r}{branch})"
        )


class BackgroundJobManager(abc.ABC):
    """The one interface every runtime implements (local, trigger-dev, vercel, disabled).

    Every method is safe to call from any thread, including from inside a running job.
    """

    @abc.abstractmethod
    def schedule_job(
        self,
        id: str,
        name: str,
        job: JobFunc,
        interval: Interval,
        *,
        timeout: Optional[Interval] = None,
        retries: int = 0,
        retry_backoff: Optional[Interval] = None,
        misfire_grace: Optional[Interval] = None,
        jitter: Optional[Interval] = None,
    ) -> None:
        """Run ``job`` every ``interval`` (seconds or ``timedelta``, > 0).

        The first run is one interval after the call, like JavaScript's ``setInterval``.
        Scheduling an id that exists replaces that job (it keeps its place in the order).
        The keywords are the job's policies (see :mod:`bgjobs.policies`); a runtime that
        cannot honour one refuses it with :class:`~bgjobs.errors.InvalidScheduleError`.
        """

    @abc.abstractmethod
    def schedule_cron_job(
        self,
        id: str,
        name: str,
        job: JobFunc,
        cron_expression: str,
        *,
        timezone: TimezoneArg = None,
        timeout: Optional[Interval] = None,
        retries: int = 0,
        retry_backoff: Optional[Interval] = None,
        misfire_grace: Optional[Interval] = None,
        jitter: Optional[Interval] = None,
    ) -> None:
        """Run ``job`` at the fire times of ``cron_expression``.

        Accepts 5 fields, 6 fields with *seconds first* (``"*/30 * * * * *"``) and the
        ``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly`` aliases. ``timezone`` is an
        IANA name or tzinfo; ``None`` means ``BGJOBS_TIMEZONE`` or UTC.
        """

    @abc.abstractmethod
    def trigger_job(self, id: str) -> bool:
        """Run the job now in the calling thread and block until it ends.

        Returns ``True`` if it ran (a failure is recorded and logged, not raised) and
        ``False`` if it was skipped because it is already running. Works for stopped jobs.
        Raises :class:`~bgjobs.errors.JobNotFoundError` for an unknown id.
        """

    @abc.abstractmethod
    def stop_job(self, id: str) -> None:
        """Cancel future runs; status becomes ``"stopped"``. Idempotent; unknown ids are ignored.

        A run in progress is not interrupted.
        """

    @abc.abstractmethod
    def stop_all_jobs(self, *, wait: bool = False, timeout: Optional[float] = None) -> bool:
        """Stop every job; with ``wait``, block until running runs end or ``timeout`` passes.

        Returns ``True`` when no run is still going on return, ``False`` otherwise (with
        ``wait``, each job still running after the timeout is logged by name). Called
        from inside a job, that job's own run does not count and is not waited for.
        """

    @abc.abstractmethod
    def get_job_status(self, id: str) -> Optional[JobStatus]:
        """The job's status snapshot, or ``None`` if no such job is known."""

    @abc.abstractmethod
    def get_all_job_statuses(self) -> List[JobStatus]:
        """Status snapshots of every job, in scheduling order."""

    @abc.abstractmethod
    def get_job_metrics(self) -> JobMetrics:
        """A snapshot of the aggregate metrics."""

    def schedule_once(
        self,
        id: str,
        name: str,
        job: JobFunc,
        *,
        at: Optional[datetime] = None,
        delay: Optional[Interval] = None,
        timeout: Optional[Interval] = None,
        retries: int = 0,
        retry_backoff: Optional[Interval] = None,
        misfire_grace: Optional[Interval] = None,
        jitter: Optional[Interval] = None,
    ) -> None:
        """Run ``job`` once: at ``at`` (an aware datetime), after ``delay`` seconds, or, with
        neither, as soon as possible. The job stays listed afterwards (its status and
        history), with no ``next_run``. This default, for runtimes whose schedules live
        elsewhere, refuses it."""
        from .errors import InvalidScheduleError

        raise InvalidScheduleError(
            f"job {id!r}: {type(self).__name__} cannot run one-off jobs (schedule_once); "
            "its schedules are crons run by another service"
        )

    def add_listener(  # noqa: B027 - optional: a manager that runs nothing ignores it
        self, callback: Callable[..., object], *, events: Any = ("failed",)
    ) -> None:
        """Call ``callback(run)`` or ``callback(run, event)`` for each of ``events``
        (``started``, ``completed``, ``failed``, ``skipped``, ``timed_out``,
        ``abandoned``; see :mod:`bgjobs.listeners`). This default, for managers that run
        nothing, never calls it."""

    def get_job_runs(self, id: str, limit: int = 20) -> List[JobRun]:
        """The job's recorded runs, newest first, at most ``limit``.

        Raises :class:`~bgjobs.errors.JobNotFoundError` for an unknown id. This default,
        for managers that keep no history, knows no runs.
        """
        if self.get_job_status(id) is None:
            from .errors import JobNotFoundError

            raise JobNotFoundError(id)
        return []

    def pause_job(self, id: str) -> None:
        """Stop the job's scheduled runs until :meth:`resume_job`, in every process that
        shares the state store, across restarts; status ``"paused"``. A manual
        :meth:`trigger_job` still runs it. Unknown id: :class:`~bgjobs.errors.JobNotFoundError`.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot pause jobs")

    def resume_job(self, id: str) -> None:
        """Undo :meth:`pause_job`. Unknown id: :class:`~bgjobs.errors.JobNotFoundError`."""
        raise NotImplementedError(f"{type(self).__name__} cannot pause jobs")

    def close(self) -> None:
        """Stop every job for good and release threads, files and connections.

        Idempotent. Managers are context managers: ``with LocalJobManager() as m:`` closes
        on leaving the block. This default stops every job; runtimes that hold resources
        release them too.
        """
        self.stop_all_jobs()

    def __enter__(self: _M) -> _M:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
