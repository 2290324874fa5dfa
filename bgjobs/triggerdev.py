"""The ``trigger-dev`` runtime: schedules live on Trigger.dev, jobs still run in Python.

Every job becomes one imperative schedule on one dispatcher task (``bgjobs-dispatch`` by
default): ``externalId`` is the job id and the deduplication key is
``bgjobs:<environment>:<job id>``, so each environment owns its own schedules. When a
schedule fires, the dispatcher task (``integrations/trigger.dev/``) hands the job id back
to Python — an HTTP call to the app's dispatch endpoint or ``python -m bgjobs exec`` — and
the job runs through the same execution core as everywhere else.

Registration never blocks or crashes the app: ``schedule_job`` validates, records the job
and returns; a background thread registers it. :meth:`TriggerDevJobManager.sync` waits
for that (the deploy step, ``bgjobs sync APP``, calls it) and raises on failure.

Server facts this module relies on (see API.md): create/upsert is ``POST
/api/v1/schedules`` (200); ``{id}`` may be the deduplication key; ``PUT`` on a missing id
*creates*, so schedules are looked up first; at the plan's limit a POST for an existing
key can answer 422 while ``PUT`` by key still works — so an existing schedule is always
updated with PUT, never re-POSTed.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

import requests

from .config import get_trigger_dev_config
from .errors import InvalidScheduleError, JobNotFoundError, TriggerDevError
from .execution import Job, ManagedJobs
from .schedules import CronSchedule, Schedule, to_five_field_cron
from .triggerdev_client import ScheduleObject, TriggerDevClient
from .types import TriggerDevConfig

__all__ = ["DEFAULT_TASK_ID", "SyncOutcome", "TriggerDevJobManager"]

logger = logging.getLogger(__name__)

DEFAULT_TASK_ID = "bgjobs-dispatch"

SyncOutcome = Literal["created", "updated", "unchanged"]
"""What registering one schedule did on the server."""


def _parse_time(value: object) -> Optional[datetime]:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else None


class _Registration:
    """What a job must look like on the server, and how the last attempt went."""

    def __init__(self, cron: str, tz: str) -> None:
        self.cron = cron
        self.tz = tz
        self.done = False
        self.outcome: Optional[SyncOutcome] = None
        self.error: Optional[TriggerDevError] = None


class TriggerDevJobManager(ManagedJobs):
    """Registers each job as a Trigger.dev schedule; runs dispatched jobs in-process.

    ``config`` defaults to :func:`~bgjobs.config.get_trigger_dev_config`; ``task_id``
    to ``TRIGGER_DEV_TASK_ID``, else ``bgjobs-dispatch``. ``session`` is an optional
    ``requests.Session``; ``connect_timeout``/``read_timeout`` (seconds) apply to every call.
    """

    def __init__(
        self,
        config: Optional[TriggerDevConfig] = None,
        *,
        task_id: Optional[str] = None,
        session: Optional[requests.Session] = None,
        env: Optional[Mapping[str, Any]] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        client: Optional[TriggerDevClient] = None,
    ) -> None:
        super().__init__(env=env)
        import os

        source = os.environ if env is None else env
        self.config = config if config is not None else get_trigger_dev_config(env)
        if client is None:
            if not self.config.api_key:
                raise ValueError(
                    "the trigger-dev mode needs an API key: set TRIGGER_DEV_API_KEY "
                    "(or TRIGGER_SECRET_KEY)"
                )
            client = TriggerDevClient(
                self.config.api_key,
                self.config.api_url,
                session=session,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            )
        self.client = client
        self.task_id = task_id or str(source.get("TRIGGER_DEV_TASK_ID") or "") or DEFAULT_TASK_ID
        self.key_prefix = f"bgjobs:{self.config.environment}:"
        # Guards _pending (job ids waiting for the worker) and _worker; _sync_done is
        # notified whenever a registration finishes.
        self._sync_lock = threading.Condition(threading.Lock())
        self._pending: List[str] = []
        self._in_flight = 0
        self._worker: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return (
            f"<TriggerDevJobManager task={self.task_id!r} "
            f"environment={self.config.environment!r} api_url={self.config.api_url!r}>"
        )

    def dedup_key(self, job_id: str) -> str:
        """``bgjobs:<environment>:<job id>``: the schedule's key on Trigger.dev."""
        return f"{self.key_prefix}{job_id}"

    # -- scheduling: record locally, register in the background -------------------------

    def _check_schedule(self, job_id: str, schedule: Schedule) -> None:
        _remote_spec(job_id, schedule)

    def _start(self, job: Job) -> None:
        assert job.schedule is not None
        job.handle = _Registration(*_remote_spec(job.id, job.schedule))
        self._enqueue([job.id])

    def _enqueue(self, job_ids: List[str]) -> None:
        with self._sync_lock:
            for job_id in job_ids:
                if job_id not in self._pending:
                    self._pending.append(job_id)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._work, name="bgjobs-triggerdev-sync", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        while True:
            with self._sync_lock:
                if not self._pending:
                    self._worker = None
                    self._sync_lock.notify_all()
                    return
                # Taken off the queue before the network call, so a job rescheduled
                # meanwhile is queued again rather than lost.
                job_id = self._pending.pop(0)
                self._in_flight += 1
            try:
                job = self._job(job_id)
                registration = job.handle if job is not None else None
                if job is not None and isinstance(registration, _Registration):
                    self._register(job, registration)
            finally:
                with self._sync_lock:
                    self._in_flight -= 1
                    self._sync_lock.notify_all()

    def _register(self, job: Job, reg: _Registration) -> None:
        try:
            outcome, remote = self._upsert(job.id, reg)
        except TriggerDevError as exc:
            reg.error, reg.done = exc, True
            with job.state_lock:
                job.sync_error = str(exc)
            logger.error("could not register job %r on Trigger.dev: %s", job.id, exc)
            return
        except Exception as exc:  # a bug or an odd response must not kill the worker
            error = TriggerDevError(f"{type(exc).__name__}: {exc}")
            reg.error, reg.done = error, True
            with job.state_lock:
                job.sync_error = str(error)
            logger.error("could not register job %r on Trigger.dev", job.id, exc_info=True)
            return
        reg.outcome, reg.error, reg.done = outcome, None, True
        with job.state_lock:
            job.sync_error = None
            if not job.stopped:
                job.next_run = _parse_time(remote.get("nextRun"))
        logger.info("Trigger.dev schedule for job %r: %s", job.id, outcome)

    def _upsert(self, job_id: str, reg: _Registration) -> Tuple[SyncOutcome, ScheduleObject]:
        key = self.dedup_key(job_id)
        existing = self.client.retrieve_schedule(key)
        if existing is None:
            created = self.client.create_schedule(
                self.task_id, reg.cron, external_id=job_id, deduplication_key=key, timezone=reg.tz
            )
            return "created", created
        if (
            existing.get("task") == self.task_id
            and existing.get("generator", {}).get("expression") == reg.cron
            and existing.get("externalId") == job_id
            and (existing.get("timezone") or "UTC") == reg.tz
        ):
            return "unchanged", existing
        # PUT by key: works even at the plan's schedule limit, and keeps `active` as is.
        updated = self.client.update_schedule(
            key, self.task_id, reg.cron, external_id=job_id, timezone=reg.tz
        )
        return "updated", updated

    def sync(self, timeout: Optional[float] = None) -> Dict[str, SyncOutcome]:
        """Block until every job's schedule is registered; retry ones that failed before.

        Returns each job's outcome (``created``/``updated``/``unchanged``). Raises
        :class:`~bgjobs.errors.TriggerDevError` naming the jobs that failed, and
        ``TimeoutError`` if ``timeout`` seconds pass first.
        """
        retry = [
            job.id
            for job in self._all_jobs()
            if isinstance(job.handle, _Registration) and job.handle.error is not None
        ]
        for job_id in retry:
            job = self._job(job_id)
            if job is not None and isinstance(job.handle, _Registration):
                job.handle.done = False
                job.handle.error = None
        if retry:
            self._enqueue(retry)
        with self._sync_lock:
            if not self._sync_lock.wait_for(
                lambda: not self._pending and not self._in_flight, timeout
            ):
                raise TimeoutError(
                    f"Trigger.dev registration still running after {timeout}s "
                    f"({len(self._pending) + self._in_flight} schedule(s) left)"
                )
        outcomes: Dict[str, SyncOutcome] = {}
        failures: List[Tuple[str, TriggerDevError]] = []
        for job in self._all_jobs():
            reg = job.handle
            if not isinstance(reg, _Registration):
                continue
            if reg.error is not None:
                failures.append((job.id, reg.error))
            elif reg.outcome is not None:
                outcomes[job.id] = reg.outcome
        if failures:
            first = failures[0][1]
            names = ", ".join(repr(job_id) for job_id, _ in failures)
            raise TriggerDevError(
                f"could not register {len(failures)} schedule(s) ({names}): {first.message}",
                status=first.status,
                path=first.path,
            )
        return outcomes

    # -- remote operations (explicit: stop_* only change local state) ---------------------

    def deactivate_remote(self, id: str) -> bool:
        """Deactivate the job's remote schedule; ``False`` if it has none."""
        key = self.dedup_key(id)
        if self.client.retrieve_schedule(key) is None:
            return False
        self.client.deactivate_schedule(key)
        return True

    def delete_remote(self, id: str) -> bool:
        """Delete the job's remote schedule; ``False`` if it had none."""
        return self.client.delete_schedule(self.dedup_key(id))

    def prune(self) -> List[str]:
        """Delete ``bgjobs:<environment>:`` schedules whose job is not on this manager.

        Schedules of other environments, and ones bgjobs did not create, are left alone.
        Returns the removed job ids.
        """
        with self._jobs_lock:
            known = set(self._jobs)
        removed: List[str] = []
        for schedule in self.client.list_schedules():
            key = schedule.get("deduplicationKey") or ""
            if not key.startswith(self.key_prefix):
                continue
            job_id = key[len(self.key_prefix) :]
            if job_id in known:
                continue
            if self.client.delete_schedule(key):
                removed.append(job_id)
                logger.info("pruned Trigger.dev schedule %r", key)
        return removed

    def trigger_remote(self, id: str, *, idempotency_key: Optional[str] = None) -> str:
        """Enqueue a run of the job on Trigger.dev now; returns the run id.

        Without ``idempotency_key`` a fresh UUID is made for this call and reused by its
        retries, so a lost response cannot start two runs.
        """
        if self._job(id) is None:
            raise JobNotFoundError(id)
        key = idempotency_key or str(uuid.uuid4())
        return self.client.trigger_task(self.task_id, {"externalId": id}, idempotency_key=key)

    def remote_schedules(self) -> List[ScheduleObject]:
        """This environment's bgjobs schedules as the server has them."""
        return [
            s
            for s in self.client.list_schedules()
            if (s.get("deduplicationKey") or "").startswith(self.key_prefix)
        ]


def _remote_spec(job_id: str, schedule: Schedule) -> Tuple[str, str]:
    """The 5-field cron and IANA timezone name the job's schedule has on Trigger.dev."""
    cron = to_five_field_cron(job_id, schedule)
    if not isinstance(schedule, CronSchedule):
        return cron, "UTC"
    tz = schedule.tz
    name = getattr(tz, "key", None)
    if name:
        return cron, str(name)
    if tz.utcoffset(None) == timedelta(0):
        return cron, "UTC"
    raise InvalidScheduleError(
        f"job {job_id!r}: timezone {tz!r} has no IANA name, which Trigger.dev requires; "
        "pass a name like 'Europe/Paris'"
    )
