"""Declaring an app's jobs once, for every runtime to read.

::

    from bgjobs import JobRegistry

    jobs = JobRegistry()

    @jobs.interval("repository-sync", "Repository Synchronization", minutes=5)
    def sync_repository(): ...

    @jobs.cron("subscription-renewal-reminder", "Subscription Renewal Reminder", "0 9 * * *")
    def send_renewal_reminders(): ...

Local timers (:func:`bgjobs.initialize_background_jobs`), the Flask extension, Vercel's
``vercel.json``, Trigger.dev's ``bgjobs sync`` and ``bgjobs exec`` all take the jobs from
here. Declarations are validated immediately, so a typo fails at import, not at 9 am.
"""

from __future__ import annotations

import inspect
import os
import threading
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, TypeVar

from .errors import InvalidScheduleError
from .policies import JobPolicy, make_policy
from .schedules import (
    IntervalSchedule,
    Schedule,
    parse_cron,
    parse_interval,
    resolve_timezone,
)
from .types import BackgroundJobManager, Interval, JobFunc, SchedulingMode, TimezoneArg

__all__ = ["RESERVED_JOB_IDS", "JobDefinition", "JobRegistry", "validate_job"]

F = TypeVar("F", bound=Callable[[], object])


RESERVED_JOB_IDS = frozenset({"status", "runs", "metrics"})
"""Ids no job may have: ``<prefix>/status``, ``/runs/<id>`` and ``/metrics`` are endpoints."""


def validate_job(job_id: object, name: object, job: object) -> None:
    """Fail fast on a declaration no manager can schedule, naming the job and the bad value."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError(f"job id must be a non-empty string, got {job_id!r}")
    if job_id != job_id.strip() or "/" in job_id or any(ch.isspace() for ch in job_id):
        raise ValueError(
            f"job id {job_id!r} may not contain '/' or whitespace: it appears in URLs, "
            "lock file names and Trigger.dev keys (use e.g. 'repository-sync')"
        )
    if job_id in RESERVED_JOB_IDS:
        raise InvalidScheduleError(
            f"job {job_id!r}: this id is reserved, because <prefix>/{job_id} is the "
            f"{job_id} endpoint (reserved: {', '.join(sorted(RESERVED_JOB_IDS))}); rename "
            "the job"
        )
    if not isinstance(name, str):
        raise TypeError(f"job {job_id!r}: name must be a string, got {name!r}")
    if not callable(job):
        raise TypeError(f"job {job_id!r}: job must be callable, got {job!r}")
    _check_takes_no_arguments(job_id, job)


def _check_takes_no_arguments(job_id: str, job: Callable[..., object]) -> None:
    """Refuse a job that needs an argument: it would fail only when it first runs."""
    try:
        signature = inspect.signature(job)
    except (TypeError, ValueError):  # a builtin or extension callable without a signature
        return  # cannot tell: accept it, as before
    required = [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    if required:
        raise InvalidScheduleError(
            f"job {job_id!r}: {_callable_name(job)} needs argument(s) "
            f"{', '.join(required)}, but a job is called with none; give them defaults or "
            "bind them (functools.partial(func, ...) or lambda: func(...))"
        )


def _callable_name(job: Callable[..., object]) -> str:
    name = getattr(job, "__qualname__", None) or getattr(job, "__name__", None)
    return f"{name}()" if isinstance(name, str) else repr(job)


@dataclass(frozen=True)
class JobDefinition:
    """One declared job: an interval (``interval`` seconds) or a cron (``cron``), never both."""

    id: str
    name: str
    func: JobFunc
    interval: Optional[float] = None
    cron: Optional[str] = None
    timezone: TimezoneArg = None
    policy: Optional[JobPolicy] = None
    """Timeout, retries, misfire grace and jitter (``None``: none set)."""

    def to_schedule(self, default_timezone: Optional[str] = None) -> Schedule:
        """This job's schedule; a cron declared without a timezone uses ``default_timezone``
        (the ``BGJOBS_TIMEZONE`` setting), else UTC."""
        if self.interval is not None:
            return IntervalSchedule(self.interval)
        assert self.cron is not None
        tz = resolve_timezone(self.id, self.timezone, default_timezone)
        return parse_cron(self.id, self.cron, tz)

    def schedule_on(self, manager: BackgroundJobManager) -> None:
        """Schedule this job on ``manager``."""
        policies = self.policy_keywords()
        if self.interval is not None:
            manager.schedule_job(self.id, self.name, self.func, self.interval, **policies)
        else:
            assert self.cron is not None
            manager.schedule_cron_job(
                self.id, self.name, self.func, self.cron, timezone=self.timezone, **policies
            )

    def policy_keywords(self) -> Dict[str, Any]:
        """The policy keywords this job was declared with (only those set)."""
        policy = self.policy
        if policy is None:
            return {}
        default = JobPolicy()
        return {
            name: getattr(policy, name)
            for name in ("timeout", "retries", "retry_backoff", "misfire_grace", "jitter")
            if getattr(policy, name) != getattr(default, name)
        }


def _caller_file() -> Optional[str]:
    import sys

    try:
        name = sys._getframe(2).f_globals.get("__file__")
    except ValueError:  # no such frame
        return None
    return os.path.abspath(name) if isinstance(name, str) else None


class JobRegistry:
    """An ordered, thread-safe collection of :class:`JobDefinition`, filled by decorators."""

    def __init__(self) -> None:
        #: The file that created this registry (absolute), or ``None``: what names the app
        #: for its default state directory (:func:`bgjobs.config.default_state_dir`).
        self.source_file: Optional[str] = _caller_file()
        # Guards _jobs; also serialises initialize_background_jobs for this registry.
        self._lock = threading.RLock()
        self._jobs: Dict[str, JobDefinition] = {}
        self._applied_to: weakref.WeakSet[BackgroundJobManager] = weakref.WeakSet()

    # -- declaring --------------------------------------------------------------------

    def interval(
        self,
        id: str,
        name: str,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        every: Optional[timedelta] = None,
        timeout: Optional[Interval] = None,
        retries: int = 0,
        retry_backoff: Optional[Interval] = None,
        misfire_grace: Optional[Interval] = None,
        jitter: Optional[Interval] = None,
    ) -> Callable[[F], F]:
        """Decorator: run the function every ``every`` (or the sum of the unit arguments).
        The other keywords are the job's policies, as on ``schedule_job``."""
        if every is None:
            try:
                every = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
            except OverflowError:
                raise InvalidScheduleError(
                    f"job {id!r}: interval of seconds={seconds!r}, minutes={minutes!r}, "
                    f"hours={hours!r}, days={days!r} is longer than the maximum of 100 years"
                ) from None
        elif seconds or minutes or hours or days:
            raise TypeError(f"job {id!r}: give either every= or seconds/minutes/hours/days")

        policy = make_policy(
            id,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            misfire_grace=misfire_grace,
            jitter=jitter,
        )

        def decorator(func: F) -> F:
            self.add_interval(id, name, func, every, policy=policy)
            return func

        return decorator

    def cron(
        self,
        id: str,
        name: str,
        expression: str,
        *,
        timezone: TimezoneArg = None,
        timeout: Optional[Interval] = None,
        retries: int = 0,
        retry_backoff: Optional[Interval] = None,
        misfire_grace: Optional[Interval] = None,
        jitter: Optional[Interval] = None,
    ) -> Callable[[F], F]:
        """Decorator: run the function at the cron expression's fire times. The other
        keywords are the job's policies, as on ``schedule_cron_job``."""
        policy = make_policy(
            id,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            misfire_grace=misfire_grace,
            jitter=jitter,
        )

        def decorator(func: F) -> F:
            self.add_cron(id, name, func, expression, timezone=timezone, policy=policy)
            return func

        return decorator

    def add_interval(
        self,
        id: str,
        name: str,
        func: JobFunc,
        interval: Interval,
        *,
        policy: Optional[JobPolicy] = None,
    ) -> None:
        """Declare an interval job without a decorator (``policy``: see
        :func:`bgjobs.policies.make_policy`)."""
        validate_job(id, name, func)
        seconds = parse_interval(id, interval)
        if policy is not None and policy.jitter >= seconds:
            raise InvalidScheduleError(
                f"job {id!r}: jitter={policy.jitter:g}s must be less than the interval "
                f"({seconds:g}s), or fires would change places"
            )
        self._add(JobDefinition(id, name, func, interval=seconds, policy=policy))

    def add_cron(
        self,
        id: str,
        name: str,
        func: JobFunc,
        expression: str,
        *,
        timezone: TimezoneArg = None,
        policy: Optional[JobPolicy] = None,
    ) -> None:
        """Declare a cron job without a decorator (``policy``: see
        :func:`bgjobs.policies.make_policy`)."""
        validate_job(id, name, func)
        # A named timezone is checked now; None stays None so each manager's default applies.
        tz = resolve_timezone(id, timezone) if timezone is not None else None
        parse_cron(id, expression, tz or resolve_timezone(id, "UTC"))
        self._add(JobDefinition(id, name, func, cron=expression, timezone=timezone, policy=policy))

    def _add(self, definition: JobDefinition) -> None:
        with self._lock:
            if definition.id in self._jobs:
                raise ValueError(f"job {definition.id!r} is declared twice in this registry")
            self._jobs[definition.id] = definition

    # -- reading ----------------------------------------------------------------------

    def get(self, id: str) -> Optional[JobDefinition]:
        """The definition of ``id``, or ``None``."""
        with self._lock:
            return self._jobs.get(id)

    def definitions(self) -> List[JobDefinition]:
        """Every definition, in declaration order."""
        with self._lock:
            return list(self._jobs.values())

    def __iter__(self) -> Iterator[JobDefinition]:
        return iter(self.definitions())

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def __contains__(self, id: object) -> bool:
        with self._lock:
            return id in self._jobs

    def __repr__(self) -> str:
        return f"<JobRegistry {[d.id for d in self.definitions()]}>"

    # -- checking -----------------------------------------------------------------------

    def check(
        self, *, mode: Optional[SchedulingMode] = None, env: Optional[Mapping[str, Any]] = None
    ) -> List[str]:
        """Every problem that would stop a job from running on the runtime ``mode``
        (default: the one ``env``, default ``os.environ``, selects), one line each, naming
        the job; empty when there is none. For a test suite::

            def test_every_job_can_run_on_vercel():
                assert jobs.check(mode="vercel") == []

        :func:`bgjobs.check.check_registry` gives the details (``bgjobs check APP`` prints them).
        """
        from .check import check_registry

        return [c.problem for c in check_registry(self, mode=mode, env=env) if c.problem]

    # -- applying -----------------------------------------------------------------------

    def apply(self, manager: BackgroundJobManager) -> None:
        """Schedule every job on ``manager`` (again, if already done: it replaces them)."""
        for definition in self.definitions():
            definition.schedule_on(manager)

    def apply_once(self, manager: BackgroundJobManager) -> bool:
        """Schedule every job on ``manager`` unless that already succeeded.

        Thread-safe; the manager is marked done only after every job was scheduled, so a
        failed attempt can simply be retried. Returns ``True`` if this call did the work.
        """
        with self._lock:
            if manager in self._applied_to:
                return False
            self.apply(manager)
            self._applied_to.add(manager)
            return True
