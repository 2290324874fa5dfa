"""The ``vercel`` runtime: Vercel Cron calls an HTTP endpoint per job; no timers here.

Each job maps to one entry of ``vercel.json``'s ``crons`` array (:func:`vercel_crons`;
``bgjobs vercel-json APP`` prints it), whose path is the dispatch endpoint
``<prefix>/<job id>``. Vercel calls it with ``GET`` and ``Authorization: Bearer
$CRON_SECRET``; :mod:`bgjobs.wsgi` checks the secret and runs the job through the execution
core like every other runtime (overlap lock, status, metrics).

Vercel evaluates crons in UTC with minute resolution and plain numeric fields, so a
schedule that cannot be written that way is refused when it is scheduled (and by
:func:`vercel_crons`) rather than silently never firing: an interval cron cannot express
exactly (7 minutes), a seconds cron, a non-UTC timezone, names such as ``MON``, or both a
day of month and a day of week. The id ``status`` is refused too: ``<prefix>/status`` is
the status endpoint.

Vercel's plans limit crons further (https://vercel.com/docs/cron-jobs/usage-and-pricing):
every plan allows 100 per project; Hobby runs each at most once a day, anywhere within the
hour it names (``0 1 * * *`` fires between 1:00 and 1:59), and refuses to deploy a cron that
would fire more often; Pro and Enterprise run them to the minute. ``vercel_crons(plan=...)``
(``bgjobs vercel-json --plan hobby``) refuses what the plan cannot run, naming the job.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote

from . import _cron
from .config import DEFAULT_PREFIX, Settings, normalize_prefix
from .errors import InvalidScheduleError
from .execution import BaseJobManager, Job
from .policies import JobPolicy
from .registry import JobRegistry
from .schedules import (
    Clock,
    CronSchedule,
    OnceSchedule,
    Schedule,
    parse_cron,
    to_five_field_cron,
)

__all__ = [
    "VERCEL_MAX_CRONS",
    "VERCEL_PLANS",
    "VercelJobManager",
    "check_vercel_plan",
    "check_vercel_policy",
    "vercel_cron_expression",
    "vercel_crons",
]

VERCEL_PLANS: Tuple[str, ...] = ("hobby", "pro", "enterprise")
"""Vercel's plans, as ``--plan`` names them."""
VERCEL_MAX_CRONS = 100
"""Cron jobs per project, on every plan."""

# What Vercel's cron parser accepts in a field: numbers, *, lists, ranges and steps.
_VERCEL_FIELD = re.compile(r"^[0-9*,/-]+$")


def vercel_cron_expression(job_id: str, schedule: Schedule) -> str:
    """The 5-field UTC cron Vercel runs ``schedule`` with, or :class:`InvalidScheduleError`."""
    if isinstance(schedule, CronSchedule) and not _is_utc(schedule.tz):
        raise InvalidScheduleError(
            f"job {job_id!r}: Vercel Cron runs in UTC, but this job's schedule is "
            f"{schedule.description}; write the expression in UTC (timezone='UTC')"
        )
    cron = to_five_field_cron(job_id, schedule)
    fields = cron.split()
    if not all(_VERCEL_FIELD.match(field) for field in fields):
        raise InvalidScheduleError(
            f"job {job_id!r}: Vercel Cron accepts only numbers, '*', ',', '-' and '/' in a "
            f"cron field, got {cron!r}; write names as numbers (MON → 1, JAN → 1)"
        )
    if fields[2] != "*" and fields[4] != "*":
        raise InvalidScheduleError(
            f"job {job_id!r}: Vercel Cron cannot restrict both the day of month and the day "
            f"of week ({cron!r}); set one of them to '*', or split the job in two"
        )
    return cron


def check_vercel_plan(job_id: str, cron: str, plan: str) -> None:
    """Raise :class:`InvalidScheduleError` unless Vercel's ``plan`` can run ``cron`` (a
    5-field UTC cron from :func:`vercel_cron_expression`); ``ValueError`` for an unknown plan.

    Hobby runs a cron at most once a day, so its minute and hour must each be one value.
    """
    if plan not in VERCEL_PLANS:
        raise ValueError(f"unknown Vercel plan {plan!r}; use one of {', '.join(VERCEL_PLANS)}")
    if plan != "hobby":
        return
    spec = _cron.parse(cron)
    fires = len(spec.minutes) * len(spec.hours)
    if fires > 1:
        raise InvalidScheduleError(
            f"job {job_id!r}: Vercel's Hobby plan runs a cron at most once a day, but "
            f"{cron!r} fires {fires} times a day; give it one minute and one hour "
            f"(e.g. '0 9 * * *', within the hour on Hobby), or deploy on Pro (--plan pro)"
        )


def _is_utc(tz: tzinfo) -> bool:
    """No offset at any time of year (``UTC``, ``Etc/UTC``, ``Africa/Abidjan``...)."""
    return all(
        datetime(2024, month, day, tzinfo=tz).utcoffset() == timedelta(0)
        for month in range(1, 13)
        for day in (1, 15)
    )


class VercelJobManager(BaseJobManager):
    """Keeps the job table and runs jobs when the dispatch endpoint is called; no timers.

    ``next_run`` in statuses is the next fire time of the job's UTC cron — when Vercel
    will call — and is kept current as time passes. ``clock`` replaces the time source
    (tests); ``settings`` (default: read from ``env``, default ``os.environ``) gives
    ``BGJOBS_TIMEZONE``.
    """

    def __init__(
        self,
        *,
        clock: Optional[Clock] = None,
        settings: Optional[Settings] = None,
        env: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(clock=clock, settings=settings, env=env)
        # Guards _crons: each live job's UTC cron, the one Vercel fires it on.
        self._crons_lock = threading.Lock()
        self._crons: Dict[Job, CronSchedule] = {}

    def _reinit_after_fork(self) -> None:
        super()._reinit_after_fork()
        self._crons_lock = threading.Lock()

    def _check_schedule(self, job_id: str, schedule: Schedule) -> None:
        if isinstance(schedule, OnceSchedule):
            raise InvalidScheduleError(
                f"job {job_id!r}: Vercel Cron cannot run one-off jobs (schedule_once); "
                "schedule it as a cron, or run it with trigger_job"
            )
        vercel_cron_expression(job_id, schedule)

    def _check_policy(self, job_id: str, policy: JobPolicy, schedule: Optional[Schedule]) -> None:
        """Vercel Cron calls on time, once, and never again: ``jitter``, ``misfire_grace``
        and ``retries`` cannot be honoured; ``timeout`` is (the run is flagged)."""
        super()._check_policy(job_id, policy, schedule)
        check_vercel_policy(job_id, policy)

    def _start(self, job: Job) -> None:
        assert job.schedule is not None
        cron = parse_cron(job.id, vercel_cron_expression(job.id, job.schedule), timezone.utc)
        with self._crons_lock:
            self._crons[job] = cron
        self._refresh(job)

    def _cancel(self, job: Job) -> None:
        with self._crons_lock:
            self._crons.pop(job, None)

    def _refresh(self, job: Job) -> None:
        """Move ``next_run`` to the next fire time after now, unless stopped or still ahead."""
        with self._crons_lock:
            cron = self._crons.get(job)
        if cron is not None:
            self._roll_next_run(job, cron, fill_unknown=True)


def check_vercel_policy(job_id: str, policy: Optional[JobPolicy]) -> None:
    """Raise :class:`InvalidScheduleError` naming the policies of ``job_id`` Vercel Cron
    cannot honour: it calls at the cron's time, once, never late and never again, so
    ``jitter``, ``misfire_grace`` and ``retries`` are refused (``timeout`` is honoured)."""
    if policy is None:
        return
    refused = [
        f"{name}={value!r}"
        for name, value in (
            ("jitter", policy.jitter or None),
            ("misfire_grace", policy.misfire_grace),
            ("retries", policy.retries or None),
        )
        if value is not None
    ]
    if refused:
        raise InvalidScheduleError(
            f"job {job_id!r}: Vercel Cron cannot honour {', '.join(refused)}: it calls the "
            "endpoint at the cron's time, once, without delay, catch-up or retry. Remove "
            "them for this runtime (timeout= is honoured)"
        )


def vercel_crons(
    registry: JobRegistry,
    prefix: str = DEFAULT_PREFIX,
    *,
    env: Optional[Mapping[str, Any]] = None,
    settings: Optional[Settings] = None,
    plan: Optional[str] = None,
) -> List[Dict[str, str]]:
    """The ``crons`` array for ``vercel.json``: one ``{"path", "schedule"}`` per job.

    ``path`` is the dispatch endpoint ``<prefix>/<URL-encoded job id>``; ``schedule`` the
    job's UTC cron (an interval converts exactly, or not at all). Cron jobs declared
    without a timezone use ``settings.timezone`` (default: read from ``env``, default
    ``os.environ``). Raises :class:`~bgjobs.errors.InvalidScheduleError` naming the first
    job whose schedule Vercel cannot express — or, given a ``plan`` (one of
    :data:`VERCEL_PLANS`), that the plan cannot run (see :func:`check_vercel_plan`), or when
    there are more jobs than the :data:`VERCEL_MAX_CRONS` a project may have. ``None``:
    no plan's limits are checked. A job declared with a policy Vercel cannot honour
    (:func:`check_vercel_policy`) is refused too: ``vercel.json`` would silently drop it.
    """
    if plan is not None and plan not in VERCEL_PLANS:
        raise ValueError(f"unknown Vercel plan {plan!r}; use one of {', '.join(VERCEL_PLANS)}")
    base = normalize_prefix(prefix)
    default_tz = Settings.coerce(settings, env).timezone
    crons = []
    for definition in registry:
        cron = vercel_cron_expression(definition.id, definition.to_schedule(default_tz))
        check_vercel_policy(definition.id, definition.policy)
        if plan is not None:
            check_vercel_plan(definition.id, cron, plan)
        crons.append({"path": f"{base}/{quote(definition.id, safe='')}", "schedule": cron})
    if plan is not None and len(crons) > VERCEL_MAX_CRONS:
        raise InvalidScheduleError(
            f"{len(crons)} jobs, but a Vercel project may have at most {VERCEL_MAX_CRONS} "
            f"cron jobs on every plan; split the jobs across projects"
        )
    return crons
