"""The ``vercel`` runtime: Vercel Cron calls an HTTP endpoint per job; no timers here.

Each job maps to one entry of ``vercel.json``'s ``crons`` array (``bgjobs vercel-json
APP`` prints it), whose path is the dispatch endpoint ``<prefix>/<job id>``. Vercel
calls it with ``Authorization: Bearer $CRON_SECRET``; :mod:`bgjobs.wsgi` checks the
secret and runs the job through the execution core like every other runtime.

Vercel evaluates crons in UTC with minute resolution, so a schedule that cannot be
written that way (a 7-minute interval, a seconds cron, a non-UTC timezone) is refused
when it is scheduled rather than silently never firing.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Dict, List, Mapping, Optional

from .errors import InvalidScheduleError
from .execution import Job, ManagedJobs
from .registry import JobRegistry
from .schedules import CronSchedule, Schedule, parse_cron, to_five_field_cron

__all__ = ["VercelJobManager", "vercel_crons"]


def _vercel_cron(job_id: str, schedule: Schedule) -> str:
    if isinstance(schedule, CronSchedule) and not _is_utc(schedule.tz):
        raise InvalidScheduleError(
            f"job {job_id!r}: Vercel Cron runs in UTC, but this job's schedule is "
            f"{schedule.description}; write the expression in UTC (timezone='UTC')"
        )
    return to_five_field_cron(job_id, schedule)


def _is_utc(tz: tzinfo) -> bool:
    return all(datetime(2024, month, 1, tzinfo=tz).utcoffset() == timedelta(0) for month in (1, 7))


class VercelJobManager(ManagedJobs):
    """Keeps the job table and runs jobs when the dispatch endpoint is called.

    ``next_run`` in statuses is the next fire time of the job's UTC cron, which is when
    Vercel will call.
    """

    def __init__(self, *, env: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(env=env)

    def _check_schedule(self, job_id: str, schedule: Schedule) -> None:
        _vercel_cron(job_id, schedule)

    def _start(self, job: Job) -> None:
        self._refresh_next_run(job)

    def _refresh_next_run(self, job: Job) -> None:
        assert job.schedule is not None
        cron = parse_cron(job.id, _vercel_cron(job.id, job.schedule), timezone.utc)
        nxt = cron.next_fire(datetime.fromtimestamp(self._clock.time(), timezone.utc))
        with job.state_lock:
            if not job.stopped:
                job.next_run = nxt

    def run(self, job: Job) -> bool:
        ran = super().run(job)
        if job.schedule is not None:
            self._refresh_next_run(job)
        return ran


def vercel_crons(registry: JobRegistry, prefix: str = "/api/cron") -> List[Dict[str, str]]:
    """The ``crons`` array for ``vercel.json``: one ``{"path", "schedule"}`` per job.

    Raises :class:`~bgjobs.errors.InvalidScheduleError` naming the first job whose schedule
    Vercel cannot express.
    """
    from urllib.parse import quote

    from .schedules import IntervalSchedule, resolve_timezone

    base = "/" + prefix.strip("/") if prefix.strip("/") else ""
    crons: List[Dict[str, str]] = []
    for definition in registry:
        schedule: Schedule
        if definition.interval is not None:
            schedule = IntervalSchedule(definition.interval)
        else:
            assert definition.cron is not None
            tz = resolve_timezone(definition.id, definition.timezone)
            schedule = parse_cron(definition.id, definition.cron, tz)
        crons.append(
            {
                "path": f"{base}/{quote(definition.id, safe='')}",
                "schedule": _vercel_cron(definition.id, schedule),
            }
        )
    return crons
