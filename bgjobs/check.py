"""Checking a registry before it runs: every schedule valid for the runtime, and when it fires.

::

    from bgjobs.check import check_registry

    for job in check_registry(jobs, mode="vercel"):
        print(job.id, job.problem or job.next_fires)

``bgjobs check APP`` prints this; :meth:`bgjobs.registry.JobRegistry.check` returns just the
problems, for a test suite (``assert jobs.check() == []``). Declarations are validated when
they are made; what only shows later is checked here: a cron without a timezone under a bad
``BGJOBS_TIMEZONE``, and, for the remote runtimes, whether each schedule converts to the
cron Trigger.dev (minute resolution, an IANA timezone) or Vercel (UTC, numbers only)
runs — the same conversion their managers make when the app starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Tuple

from . import _time
from .config import Settings
from .errors import InvalidScheduleError
from .schedules import CronSchedule, IntervalSchedule, Schedule, parse_cron, resolve_timezone
from .types import SchedulingMode

if TYPE_CHECKING:
    from .registry import JobDefinition, JobRegistry

__all__ = ["FIRES_SHOWN", "JobCheck", "check_registry"]

FIRES_SHOWN = 5
"""How many upcoming fire times a check lists per job."""


@dataclass(frozen=True)
class JobCheck:
    """One job, checked for one runtime."""

    id: str
    schedule: str
    """As a status shows it: ``"every 5m"``, ``"cron 0 9 * * * (Europe/Paris)"``."""
    problem: Optional[str] = None
    """Why the job cannot run on that runtime (one line naming the job); ``None``: it can."""
    runs_as: Optional[str] = None
    """The cron a remote runtime is given (``"*/5 * * * *"``, UTC for Vercel); ``None`` for
    the local runtime, which runs the schedule itself."""
    next_fires: List[datetime] = field(default_factory=list)
    """The next fire times, aware, in the job's timezone (UTC for an interval, which counts
    from when the scheduler starts: these assume it starts now)."""


def check_registry(
    registry: JobRegistry,
    *,
    mode: Optional[SchedulingMode] = None,
    settings: Optional[Settings] = None,
    env: Optional[Mapping[str, Any]] = None,
    now: Optional[datetime] = None,
    count: int = FIRES_SHOWN,
) -> List[JobCheck]:
    """Check every job of ``registry`` for the runtime ``mode`` (default: the one the
    settings choose, ``settings`` or read from ``env``, default ``os.environ``), in
    declaration order, with the next ``count`` fire times after ``now`` (default: now)."""
    settings = Settings.coerce(settings, env)
    chosen: SchedulingMode = mode if mode is not None else settings.mode
    if chosen not in ("local", "disabled", "trigger-dev", "vercel"):
        raise ValueError(
            f"mode must be 'local', 'trigger-dev', 'vercel' or 'disabled', got {chosen!r}"
        )
    start = now if now is not None else _time.utc_now()
    return [_check(d, chosen, settings, start, count) for d in registry]


def _check(
    definition: JobDefinition, mode: SchedulingMode, settings: Settings, now: datetime, count: int
) -> JobCheck:
    described = f"cron {definition.cron}" if definition.cron is not None else "interval"
    try:
        schedule = definition.to_schedule(settings.timezone)
        described = schedule.description
        _runtime_checks(definition, schedule, mode)
        runs_as, fires_by = _runtime_schedule(definition.id, schedule, mode)
        fires = _next_fires(fires_by, now, count)
    except InvalidScheduleError as exc:
        return JobCheck(definition.id, described, problem=_one_line(str(exc)))
    except Exception as exc:  # a schedule that breaks the cron maths: still one line, named
        problem = f"job {definition.id!r}: {described} cannot be evaluated ({exc})"
        return JobCheck(definition.id, described, problem=_one_line(problem))
    return JobCheck(definition.id, described, runs_as=runs_as, next_fires=fires)


def _runtime_checks(definition: JobDefinition, schedule: Schedule, mode: SchedulingMode) -> None:
    """The runtime's own refusals of a schedule or a policy (what scheduling would raise)."""
    runtime: Any
    if mode == "vercel":
        from .vercel import VercelJobManager as runtime
    elif mode == "trigger-dev":
        from .triggerdev import TriggerDevJobManager as runtime
    else:
        from .local import LocalJobManager as runtime
    # The checks read no manager state, so no manager is built: a Trigger.dev one would
    # need credentials, and building any would open the state directory for nothing.
    checker = object.__new__(runtime)
    checker._check_schedule(definition.id, schedule)
    if definition.policy is not None:
        checker._check_policy(definition.id, definition.policy, schedule)


def _runtime_schedule(
    job_id: str, schedule: Schedule, mode: SchedulingMode
) -> Tuple[Optional[str], Schedule]:
    """The cron the runtime is given (``None`` locally), and the schedule it fires by."""
    if mode == "vercel":
        from .vercel import vercel_cron_expression

        cron = vercel_cron_expression(job_id, schedule)
        return cron, parse_cron(job_id, cron, resolve_timezone(job_id, "UTC"))
    if mode == "trigger-dev":
        from .triggerdev import _remote_spec  # the conversion its manager makes

        cron, tz = _remote_spec(job_id, schedule)
        zone = schedule.tz if isinstance(schedule, CronSchedule) else resolve_timezone(job_id, tz)
        return cron, parse_cron(job_id, cron, zone)
    return None, schedule


def _next_fires(schedule: Schedule, now: datetime, count: int) -> List[datetime]:
    if isinstance(schedule, CronSchedule):
        fires: List[datetime] = []
        after = now
        for _ in range(count):
            after = schedule.next_fire(after)
            fires.append(after.astimezone(schedule.tz))
        return fires
    assert isinstance(schedule, IntervalSchedule)
    step = timedelta(seconds=schedule.seconds)
    return [now + step * k for k in range(1, count + 1)]


def _one_line(text: str) -> str:
    return " ".join(text.split())
