"""The ``trigger-dev`` runtime: schedules live on Trigger.dev, jobs still run in Python.

Every job becomes one imperative schedule on one dispatcher task (``bgjobs-dispatch`` by
default): ``externalId`` is the job id and the deduplication key is
``bgjobs:<scope>:<job id>``, where the scope is the key's environment (``production``,
``staging``), each developer's own (``development-<key hash>``) or a preview branch's
(``preview-<branch>``): deduplication keys are unique per project, so each environment
must own its own keys, or one environment's sync moves another's schedules away. When a
schedule fires, the dispatcher task (``integrations/trigger.dev/``) hands the job id back
to Python — an HTTP call to the app's dispatch endpoint or ``python -m bgjobs exec`` — and
the job runs through the same execution core as everywhere else.

Registration never blocks or crashes the app: ``schedule_job`` validates, records the job
and returns; one background thread (``bgjobs-triggerdev-sync``) registers queued jobs one
at a time. :meth:`TriggerDevJobManager.sync` waits for that (the deploy step,
``bgjobs sync APP``, calls it through :func:`sync_registry`) and raises on failure.

* A job rescheduled while its registration is in flight is queued again, so the latest
  schedule is always the last one written.
* ``stop_job``/``stop_all_jobs`` make no HTTP calls; queued registrations of stopped jobs
  are put off (the worker goes quiet) until an explicit :meth:`~TriggerDevJobManager.sync`.
* The worker holds the manager only weakly between jobs: a manager that is garbage
  collected stops it. No exception kills it silently; after ``os.fork()`` the child gets a
  fresh lock and connection pool and re-queues what the parent had in flight.

Server facts this module relies on (see API.md): create/upsert is ``POST
/api/v1/schedules`` (200); ``{id}`` may be the deduplication key; ``PUT`` on a missing id
*creates*, so schedules are looked up first; at the plan's limit a POST for an existing
key can answer 422 while ``PUT`` by key still works — so an existing schedule is always
updated with PUT, never re-POSTed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, FrozenSet, List, Literal, Mapping, Optional, Set, Tuple

import requests

from . import _time
from . import _trigger_stamp as stamp
from ._local.hostlock import HostLock, LockDirectory, lock_file_name
from ._trigger_keys import key_environment
from ._trigger_zones import server_zone
from .config import DEFAULT_TASK_ID, Settings
from .errors import InvalidScheduleError, JobNotFoundError, TriggerDevError
from .execution import BaseJobManager, Job
from .policies import JobPolicy
from .registry import JobRegistry
from .schedules import (
    CronSchedule,
    OnceSchedule,
    Schedule,
    resolve_timezone,
    to_five_field_cron,
)
from .triggerdev_client import ScheduleObject, TriggerDevClient, scrub
from .types import TRIGGER_DEV_ENVIRONMENTS, TriggerDevConfig

__all__ = [
    "DEFAULT_TASK_ID",
    "SyncOutcome",
    "SyncReport",
    "TriggerDevJobManager",
    "remote_payload",
    "sync_registry",
]

logger = logging.getLogger(__name__)

_LEAD_WAIT = 60.0  # seconds a process waits for the host's registrant before going ahead
_LEAD_POLL = 0.05

SyncOutcome = Literal["created", "updated", "unchanged"]
"""What registering one schedule did on the server."""

_State = Literal["queued", "running", "done", "failed", "deferred", "stale"]
"""Where a registration stands: waiting for the worker, being sent, registered, failed,
put off (its job was stopped before its turn), or known to be gone from the server."""


def _parse_time(value: object) -> Optional[datetime]:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else None


class _Registration:
    """What one job must look like on the server, and how registering it went.

    ``job``, ``cron`` and ``tz`` never change; every other field is guarded by the manager's
    ``_sync_lock``.
    """

    __slots__ = (
        "_cron_schedule",
        "attempt",
        "cron",
        "error",
        "job",
        "outcome",
        "sent_tz",
        "state",
        "tz",
    )

    def __init__(self, job: Job, cron: str, tz: str) -> None:
        self.job = job
        self.cron = cron
        self.tz = tz
        self.state: _State = "queued"
        self.outcome: Optional[SyncOutcome] = None
        self.error: Optional[TriggerDevError] = None
        #: Sequence number of the last attempt (0: none yet), to tell attempts that began
        #: before a sync() call from those it started.
        self.attempt = 0
        #: The name the server accepted for ``tz`` (its list may know the zone by another).
        self.sent_tz: Optional[str] = None
        self._cron_schedule: Optional[CronSchedule] = None

    def cron_schedule(self, job_id: str) -> CronSchedule:
        """The remote cron as a local schedule, to move ``next_run`` on between syncs."""
        if self._cron_schedule is None:
            tz = resolve_timezone(job_id, self.tz)
            self._cron_schedule = CronSchedule(self.cron, tz, seconds_field=False)
        return self._cron_schedule


@dataclass(frozen=True)
class _QueueEntry:
    """One registration waiting for (or in) the worker."""

    job: Job
    registration: _Registration
    forced: bool
    """sync() asked for it: registered even if the job is stopped."""


class TriggerDevJobManager(BaseJobManager):
    """Registers each job as a Trigger.dev schedule; runs dispatched jobs in-process.

    ``config`` defaults to the settings' Trigger.dev part, ``task_id`` to
    ``TRIGGER_DEV_TASK_ID``, else ``bgjobs-dispatch`` (``settings`` default: read from
    ``env``, default ``os.environ``). ``session`` is an optional ``requests.Session``;
    ``connect_timeout``/``read_timeout`` (seconds) apply to every call, and
    ``TRIGGER_DEV_MAX_ATTEMPTS`` (default 5) bounds the attempts of each. ``client``
    replaces the whole HTTP client (then ``session``, the timeouts and the attempts are
    unused).
    """

    def __init__(
        self,
        config: Optional[TriggerDevConfig] = None,
        *,
        task_id: Optional[str] = None,
        session: Optional[requests.Session] = None,
        env: Optional[Mapping[str, Any]] = None,
        settings: Optional[Settings] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        client: Optional[TriggerDevClient] = None,
    ) -> None:
        super().__init__(settings=settings, env=env)
        self.config = config if config is not None else self.settings.trigger_dev
        if client is None:
            _require_configured(self.config)
        elif self.config.environment not in TRIGGER_DEV_ENVIRONMENTS or key_environment(
            self.config.api_key
        ) not in (None, self.config.environment):
            _require_configured(self.config)  # the environment is in every schedule's key
        self.task_id = task_id or self.settings.task_id
        self.key_prefix = f"bgjobs:{self.config.scope}:"
        self._timeouts = (connect_timeout, read_timeout)
        # A client we build on our own pool is rebuilt in a forked child; one handed in
        # (or built on a caller's session) is the caller's to manage.
        self._owns_pool = client is None and session is None
        self._owns_client = client is None
        self.client = client if client is not None else self._new_client(session)
        # Guards _registrations, _queue, _in_flight, _worker, _attempts and the state
        # fields of every _Registration. Taken after _jobs_lock when both are needed
        # (_start runs with _jobs_lock held); never held across a network call.
        # Notified whenever the queue drains or a registration ends.
        self._sync_lock = threading.Condition(threading.Lock())
        self._registrations: Dict[str, _Registration] = {}  # job id -> the latest
        self._queue: Dict[str, _QueueEntry] = {}  # job id -> latest entry, oldest first
        self._in_flight: Optional[_QueueEntry] = None
        self._worker: Optional[threading.Thread] = None
        self._attempts = 0
        # The server's time zone names, read once per sync() (None: read it when needed);
        # only the registration thread reads it. And the renames already logged.
        self._server_zones: Optional[FrozenSet[str]] = None
        self._zones_logged: Set[Tuple[str, str]] = set()
        # The registry stamp's histories, read once per batch (None: read when needed),
        # and whether its marker schedule exists; only the registration thread uses them.
        self._stamps: Optional[Dict[str, List[str]]] = None
        self._stamp_exists = False
        # Start-up registration is one process at a time per host (state directory): the
        # lock file, once opened, and whether this process holds it for the current batch.
        self._lead_lock: Optional[HostLock] = None
        self._leading = False
        self._lead_unavailable = False

    def _new_client(self, session: Optional[requests.Session] = None) -> TriggerDevClient:
        assert self.config.api_key is not None  # checked in __init__
        connect_timeout, read_timeout = self._timeouts
        return TriggerDevClient(
            self.config.api_key,
            self.config.api_url,
            session=session,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=self.settings.trigger_dev_max_attempts,
            branch=self.config.branch,
        )

    def __repr__(self) -> str:
        with self._jobs_lock:
            count = len(self._jobs)
        return (
            f"<TriggerDevJobManager task={self.task_id!r} "
            f"environment={self.config.environment!r} api_url={self.client.api_url!r} "
            f"jobs={count}>"
        )

    def dedup_key(self, job_id: str) -> str:
        """``bgjobs:<scope>:<job id>``: the schedule's key on Trigger.dev.

        The scope is the environment, made per developer for development keys and per
        branch for previews (:attr:`~bgjobs.types.TriggerDevConfig.scope`).
        """
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"job id must be a non-empty string, got {job_id!r}")
        return f"{self.key_prefix}{job_id}"

    # -- scheduling: record locally, register in the background -------------------------

    def _check_schedule(self, job_id: str, schedule: Schedule) -> None:
        if isinstance(schedule, OnceSchedule):
            raise InvalidScheduleError(
                f"job {job_id!r}: Trigger.dev schedules are crons; a one-off job "
                "(schedule_once) cannot be registered. Use trigger_remote(id) to run a job "
                "once on Trigger.dev"
            )
        _remote_spec(job_id, schedule)

    def _check_policy(self, job_id: str, policy: JobPolicy, schedule: Optional[Schedule]) -> None:
        """Trigger.dev fires schedules on time and decides itself about late runs: ``jitter``
        and ``misfire_grace`` cannot be honoured. ``retries`` maps onto the dispatcher
        task's retries (the dispatch answer tells it how many this job allows);
        ``timeout`` is honoured by the execution core (the run is flagged)."""
        super()._check_policy(job_id, policy, schedule)
        refused = [
            f"{name}={value!r}"
            for name, value in (
                ("jitter", policy.jitter or None),
                ("misfire_grace", policy.misfire_grace),
            )
            if value is not None
        ]
        if refused:
            raise InvalidScheduleError(
                f"job {job_id!r}: Trigger.dev schedules cannot honour {', '.join(refused)}: "
                "Trigger.dev fires them at the cron's time and handles late runs itself. "
                "Remove them for this runtime (timeout= and retries= are honoured)"
            )

    def _start(self, job: Job) -> None:
        assert job.schedule is not None
        registration = _Registration(job, *_remote_spec(job.id, job.schedule))
        with self._sync_lock:
            self._registrations[job.id] = registration
            previous = self._queue.get(job.id)
            forced = previous.forced if previous is not None else False
            if not forced and not self.settings.trigger_dev_register_on_start:
                # Start-up registration is off (the deploy step, `bgjobs sync`, does it):
                # recorded only; sync() registers it.
                if previous is not None:
                    del self._queue[job.id]
                registration.state = "deferred"
                return
            # Keyed by id: a job rescheduled before its turn is registered once, as last set.
            self._queue[job.id] = _QueueEntry(job, registration, forced)
            try:
                self._start_worker_locked()
            except RuntimeError:  # no new threads (interpreter shutdown): sync() retries
                logger.warning(
                    "could not start the Trigger.dev registration thread; job %r stays "
                    "queued until sync()",
                    job.id,
                    exc_info=True,
                )

    def _start_worker_locked(self) -> None:
        """Start the worker thread unless one is running. Called with ``_sync_lock`` held."""
        if self._worker is not None and self._worker.is_alive():
            return
        thread = threading.Thread(
            target=_worker_main,
            args=(weakref.ref(self),),
            name="bgjobs-triggerdev-sync",
            daemon=True,
        )
        thread.start()
        self._worker = thread

    def _work_once(self) -> bool:
        """Register the oldest queued job; ``False`` (and the worker ends) if none is left."""
        me = threading.current_thread()
        with self._sync_lock:
            if self._worker is not me:
                return False  # replaced after a fork or a crash: leave the queue to it
            if not self._queue:
                self._worker = None
                self._stamps = None  # the next batch reads the registry stamp again
                self._stop_leading()
                self._sync_lock.notify_all()
                return False
            job_id = next(iter(self._queue))
            entry = self._queue.pop(job_id)
            job, registration = entry.job, entry.registration
            # Taken off the queue before the network call, so a job rescheduled meanwhile
            # is queued again (and registered after this) rather than lost.
            self._in_flight = entry
            registration.state = "running"
        try:
            if entry.forced or not job.stopped:
                self._register(job, registration, entry.forced)
        finally:
            with self._sync_lock:
                if self._in_flight is entry:
                    self._in_flight = None
                if registration.state == "running":  # skipped: the job was stopped
                    registration.state = "deferred"
                self._sync_lock.notify_all()
        return True

    def _worker_crashed(self, exc: BaseException) -> None:
        """Last resort: fail what is queued (sync() reports it) instead of dying silently."""
        logger.critical(
            "the Trigger.dev registration thread failed:\n%s", self._format_exception(exc)
        )
        error = TriggerDevError(
            f"internal error in the registration thread: {self._scrub(repr(exc))}"
        )
        with self._sync_lock:
            entries = list(self._queue.values())
            if self._in_flight is not None:
                entries.append(self._in_flight)
            self._queue.clear()
            self._in_flight = None
            for entry in entries:
                registration = entry.registration
                if registration.state in ("queued", "running"):
                    self._attempts += 1
                    registration.state, registration.error = "failed", error
                    registration.attempt = self._attempts
            if self._worker is threading.current_thread():
                self._worker = None
                self._stop_leading()
            self._sync_lock.notify_all()

    def _register(self, job: Job, registration: _Registration, forced: bool = True) -> None:
        with self._sync_lock:
            self._attempts += 1
            registration.attempt = self._attempts
        mark = stamp.fingerprint(self.task_id, registration.cron, registration.tz)
        if not forced:
            self._lead()
            if self._stamp_verdict(job, registration, mark) != "register":
                return
        try:
            outcome, remote = self._upsert(job.id, registration)
        except Exception as exc:  # a bug or an odd response must not kill the worker
            if isinstance(exc, TriggerDevError):
                error = exc
                logger.error("could not register job %r on Trigger.dev: %s", job.id, error)
            else:
                error = TriggerDevError(self._scrub(f"{type(exc).__name__}: {exc}"))
                logger.error(
                    "could not register job %r on Trigger.dev:\n%s",
                    job.id,
                    self._format_exception(exc),
                )
            with self._sync_lock:
                registration.state, registration.outcome = "failed", None
                registration.error = error
            job.set_sync_error(f"could not register the schedule on Trigger.dev: {error}")
            return
        next_run = _parse_time(remote.get("nextRun"))
        with self._sync_lock:
            registration.state, registration.outcome = "done", outcome
            registration.error = None
        job.set_sync_error(None)
        job.set_next_run(next_run)
        logger.info("Trigger.dev schedule for job %r: %s", job.id, outcome)
        self._stamp(job.id, mark)

    # -- one start-up registrant per host ---------------------------------------------------

    def _lead(self) -> None:
        """Wait until this process is the host's start-up registrant, so that the workers
        of a host booting together register once: the first takes the state directory's
        lock and registers (and stamps); the others wait, then find the stamp current and
        send nothing more. Without a state directory (or ``flock``), every process goes on."""
        if self._leading or self._lead_unavailable or not self.settings.lock_dir:
            return
        lock = self._lead_lock
        if lock is None:
            try:
                directory = LockDirectory(self.settings.lock_dir)
            except (NotImplementedError, OSError) as exc:
                logger.debug("no host-wide Trigger.dev registration lock: %s", exc)
                self._lead_unavailable = True
                return
            lock = self._lead_lock = directory.lock(
                lock_file_name("triggerdev-register", self.config.scope)
            )
        deadline = _time.monotonic() + _LEAD_WAIT
        waited = False
        while not lock.try_acquire():
            if _time.monotonic() > deadline:
                logger.warning(
                    "another process has been registering Trigger.dev schedules for %.0f s; "
                    "registering anyway",
                    _LEAD_WAIT,
                )
                return
            waited = True
            time.sleep(_LEAD_POLL)
        self._leading = True
        if waited:
            self._stamps = None  # it registered meanwhile: read the stamp it left

    def _stop_leading(self) -> None:
        if self._leading and self._lead_lock is not None:
            self._lead_lock.release(close=False)
        self._leading = False

    # -- the registry stamp (see bgjobs._trigger_stamp) ------------------------------------

    def _read_stamps(self) -> Optional[Dict[str, List[str]]]:
        """The stamp's per-job histories (read once per batch); ``None`` if unusable."""
        if not self.settings.trigger_dev_registry_stamp:
            return None
        if self._stamps is None:
            try:
                marker = self.client.retrieve_schedule(stamp.marker_key(self.config.scope))
            except TriggerDevError as exc:
                logger.warning("could not read the bgjobs registry stamp on Trigger.dev: %s", exc)
                return None
            self._stamps = stamp.decode(marker.get("externalId")) if marker else {}
            self._stamp_exists = marker is not None
        return self._stamps

    def _stamp_verdict(self, job: Job, registration: _Registration, mark: str) -> stamp.Verdict:
        """A start-up registration: send it, skip it (already this schedule), or refuse it
        (an older registry's). Never raises: without the stamp, everything is sent."""
        stamps = self._read_stamps()
        verdict = stamp.verdict(stamps.get(job.id, []), mark) if stamps is not None else "register"
        if verdict == "current":
            with self._sync_lock:
                registration.state, registration.outcome = "done", "unchanged"
                registration.error = None
            job.set_sync_error(None)
            self._roll_next_run(job, registration.cron_schedule(job.id), fill_unknown=True)
            logger.debug("Trigger.dev schedule for job %r: already registered", job.id)
        elif verdict == "older":
            # Left "running": the worker marks it deferred, and an explicit sync() sends it.
            message = (
                "not registered at start-up: a newer registry has registered another "
                "schedule for this job on Trigger.dev (a rolling deploy?); `bgjobs sync` "
                "registers this one anyway"
            )
            logger.warning("job %r: %s", job.id, message)
            job.set_sync_error(message)
        return verdict

    def _stamp(self, job_id: str, mark: str) -> None:
        """Record ``mark`` as the job's latest schedule in the registry stamp."""
        stamps = self._read_stamps()
        if stamps is None:
            return
        history = stamps.get(job_id, [])
        if history and history[-1] == mark:
            return
        updated = {**stamps, job_id: stamp.stamped(history, mark)}
        key = stamp.marker_key(self.config.scope)
        text = stamp.encode(updated)
        try:
            if self._stamp_exists:
                self.client.update_schedule(
                    key, self.task_id, stamp.MARKER_CRON, external_id=text, timezone="UTC"
                )
            else:
                self.client.create_schedule(
                    self.task_id,
                    stamp.MARKER_CRON,
                    external_id=text,
                    deduplication_key=key,
                    timezone="UTC",
                )
                # Inactive: it never fires and does not count against the plan's limit.
                self.client.deactivate_schedule(key)
                self._stamp_exists = True
        except TriggerDevError as exc:
            logger.warning("could not update the bgjobs registry stamp on Trigger.dev: %s", exc)
            return
        self._stamps = updated

    def _server_tz(self, job_id: str, tz: str) -> str:
        """The name the server accepts for ``tz``; raises if it has none for the zone."""
        if tz == "UTC":
            return tz  # every server accepts it (it adds it to its runtime's list)
        zones = self._server_zones
        if zones is None:
            try:
                zones = frozenset(self.client.timezones())
            except TriggerDevError as exc:
                # Unknown to this server (an old self-hosted one?) or unreachable: send the
                # name as it is; the schedule request reports any problem.
                logger.warning("could not read Trigger.dev's time zones (%s); sending %r", exc, tz)
                return tz
            self._server_zones = zones
        sent = server_zone(tz, zones)
        if sent is None:
            raise TriggerDevError(
                f"job {job_id!r}: the Trigger.dev server does not accept the time zone "
                f"{tz!r} and lists no equivalent zone (it accepts its runtime's "
                "Intl.supportedValuesOf('timeZone') plus UTC); use a zone it lists",
                path="/api/v1/timezones",
            )
        if sent != tz and (tz, sent) not in self._zones_logged:
            self._zones_logged.add((tz, sent))
            logger.info(
                "Trigger.dev knows time zone %r as %r; job %r is registered with %r",
                tz,
                sent,
                job_id,
                sent,
            )
        return sent

    def _upsert(
        self, job_id: str, registration: _Registration
    ) -> Tuple[SyncOutcome, ScheduleObject]:
        key = self.dedup_key(job_id)
        tz = self._server_tz(job_id, registration.tz)
        with self._sync_lock:
            registration.sent_tz = tz
        existing = self.client.retrieve_schedule(key)
        if existing is None:
            try:
                return "created", self._create(job_id, registration, tz)
            except TriggerDevError as exc:
                # At the plan's limit a POST answers 422 even for an existing key. If
                # another process created it since our GET, update it by key instead.
                if exc.status != 422:
                    raise
                existing = self.client.retrieve_schedule(key)
                if existing is None:
                    limit = _limit_error(job_id, exc)
                    if limit is not None:
                        raise limit from exc
                    raise
        if self._matches(existing, job_id, registration.cron, tz):
            return "unchanged", existing
        # PUT by key: works even at the plan's schedule limit, and keeps `active` as is.
        updated = self.client.update_schedule(
            key, self.task_id, registration.cron, external_id=job_id, timezone=tz
        )
        old_id, new_id = existing.get("id"), updated.get("id")
        if isinstance(old_id, str) and isinstance(new_id, str) and old_id != new_id:
            # Deleted between our GET and PUT, and PUT on a missing id creates a new,
            # unkeyed schedule: remove that stray, then create ours properly.
            logger.warning(
                "Trigger.dev schedule %r vanished while being updated; recreating it", key
            )
            self.client.delete_schedule(new_id)
            return "created", self._create(job_id, registration, tz)
        return "updated", updated

    def _create(self, job_id: str, registration: _Registration, tz: str) -> ScheduleObject:
        return self.client.create_schedule(
            self.task_id,
            registration.cron,
            external_id=job_id,
            deduplication_key=self.dedup_key(job_id),
            timezone=tz,
        )

    def _matches(self, existing: ScheduleObject, job_id: str, cron: str, tz: str) -> bool:
        generator = existing.get("generator")
        expression = generator.get("expression") if isinstance(generator, dict) else None
        return (
            existing.get("task") == self.task_id
            and expression == cron
            and existing.get("externalId") == job_id
            and (existing.get("timezone") or "UTC") == tz
        )

    def sync(self, timeout: Optional[float] = None) -> Dict[str, SyncOutcome]:
        """Block until every job's schedule is registered; retry ones that failed before.

        Every job gets an attempt that began after this call unless its registration
        already succeeded, so a failure from before (or one in flight when ``sync`` was
        called) is retried. Stopped jobs are registered too: stopping is local.

        Returns each job's outcome (``created``/``updated``/``unchanged``), in scheduling
        order. Raises :class:`~bgjobs.errors.TriggerDevError` naming the jobs that failed,
        and ``TimeoutError`` if ``timeout`` seconds pass first (the work goes on; call
        ``sync`` again to wait for it).
        """
        deadline = None if timeout is None else _time.monotonic() + max(0.0, timeout)
        self._server_zones = None  # read the server's time zones again, once
        self._stamps = None  # and the registry stamp
        with self._sync_lock:
            mark = self._attempts
        while True:
            settled = self._settle(mark)
            if settled is not None:
                break
            with self._sync_lock:
                remaining = None if deadline is None else max(0.0, deadline - _time.monotonic())
                if not self._sync_lock.wait_for(self._drained, remaining):
                    left = len(self._queue) + (self._in_flight is not None)
                    raise TimeoutError(
                        f"Trigger.dev registration still running after {timeout}s "
                        f"({left} schedule(s) left); call sync() again to keep waiting"
                    )
        outcomes, failures = settled
        if failures:
            first = failures[0][1]
            if len(failures) == 1:
                message = f"could not register the schedule of job {failures[0][0]!r}: "
                message += first.message
            else:
                details = "; ".join(f"{job_id!r} ({_brief(err)})" for job_id, err in failures)
                message = f"could not register the schedules of {len(failures)} jobs: {details}"
            raise TriggerDevError(message, status=first.status, path=first.path)
        return outcomes

    def _drained(self) -> bool:
        return not self._queue and self._in_flight is None

    def _settle(
        self, mark: int
    ) -> Optional[Tuple[Dict[str, SyncOutcome], List[Tuple[str, TriggerDevError]]]]:
        """Outcomes and failures if every job is settled, else queue what needs an attempt.

        A registration needs one when it failed in an attempt that began before ``mark``,
        was put off (stopped job) or is known to be gone from the server.
        """
        outcomes: Dict[str, SyncOutcome] = {}
        failures: List[Tuple[str, TriggerDevError]] = []
        unsettled = False
        with self._jobs_lock, self._sync_lock:  # the lock order _start uses
            for job in self._jobs.values():
                registration = self._registration(job)
                if registration is None:
                    continue
                state = registration.state
                if state == "done" and registration.outcome is not None:
                    outcomes[job.id] = registration.outcome
                elif state == "failed" and registration.attempt > mark:
                    assert registration.error is not None
                    failures.append((job.id, registration.error))
                else:
                    unsettled = True
                    in_flight = (
                        self._in_flight is not None and self._in_flight.registration is registration
                    )
                    if not in_flight:
                        # Failed before this call, put off, gone remotely, or queued: (re)queue
                        # it as forced, so it is registered even if its job is stopped.
                        registration.state, registration.error = "queued", None
                        self._queue[job.id] = _QueueEntry(job, registration, True)
            if unsettled:
                self._start_worker_locked()
                return None
        return outcomes, failures

    # -- statuses ------------------------------------------------------------------------

    def _refresh(self, job: Job) -> None:
        """Move a passed ``next_run`` (the server's ``nextRun`` at registration) on by the cron."""
        with self._sync_lock:
            registration = self._registration(job)
        if registration is not None:
            self._roll_next_run(job, registration.cron_schedule(job.id), fill_unknown=False)

    # -- remote operations (explicit: stop_* only change local state) ---------------------

    def deactivate_remote(self, id: str) -> bool:
        """Deactivate the job's remote schedule; ``False`` if it has none.

        A later registration leaves it inactive (the ``active`` flag is the operator's).
        """
        key = self.dedup_key(id)
        try:
            self.client.deactivate_schedule(key)
        except TriggerDevError as exc:
            if exc.status == 404:
                return False
            raise
        job = self._job(id)
        if job is not None:
            job.set_next_run(None)  # an inactive schedule has no next run
        logger.info("deactivated Trigger.dev schedule %r", key)
        return True

    def delete_remote(self, id: str) -> bool:
        """Delete the job's remote schedule; ``False`` if it had none.

        If the job is still on this manager, the next :meth:`sync` creates it again.
        """
        key = self.dedup_key(id)
        if not self.client.delete_schedule(key):
            return False
        logger.info("deleted Trigger.dev schedule %r", key)
        job = self._job(id)
        if job is not None:
            with self._sync_lock:
                registration = self._registration(job)
                if registration is not None and registration.state == "done":
                    registration.state, registration.outcome = "stale", None
            job.set_next_run(None)
        return True

    def prune(self) -> List[str]:
        """Delete ``bgjobs:<scope>:`` schedules whose job is not on this manager.

        Schedules of other environments, and ones bgjobs did not create, are left alone;
        a stopped job still counts as on the manager. Returns the removed job ids.
        """
        known = {job.id for job in self._all_jobs()}
        removed: List[str] = []
        for schedule in self.client.list_schedules():
            key = schedule.get("deduplicationKey") or ""
            if not key.startswith(self.key_prefix):
                continue
            job_id = key[len(self.key_prefix) :]
            if not job_id or job_id in known:
                continue
            if self.client.delete_schedule(key):
                removed.append(job_id)
                logger.info("pruned Trigger.dev schedule %r", key)
        return removed

    def trigger_remote(self, id: str, *, idempotency_key: Optional[str] = None) -> str:
        """Enqueue a run of the job on Trigger.dev now; returns the run id.

        The payload has the shape of a scheduled fire's (:func:`remote_payload`), so the
        dispatcher task treats it like one. Without ``idempotency_key`` a fresh UUID is
        made for this call and reused by its retries, so a lost response cannot start two
        runs.
        """
        job = self._job(id)
        if job is None:
            raise JobNotFoundError(id)
        with self._sync_lock:
            registration = self._registration(job)
        tz = (registration.sent_tz or registration.tz) if registration is not None else "UTC"
        payload = remote_payload(id, self.dedup_key(id), tz, datetime.now(timezone.utc))
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        return self.client.trigger_task(self.task_id, payload, idempotency_key=key)

    def remote_schedules(self) -> List[ScheduleObject]:
        """This environment's bgjobs schedules as the server has them."""
        return [
            s
            for s in self.client.list_schedules()
            if (s.get("deduplicationKey") or "").startswith(self.key_prefix)
        ]

    # -- housekeeping ----------------------------------------------------------------------

    def _remote_specs(self) -> Dict[str, Tuple[str, str]]:
        """Job id → (cron, timezone) as sent to Trigger.dev, in scheduling order."""
        jobs = self._all_jobs()
        with self._sync_lock:
            found = [(job.id, self._registration(job)) for job in jobs]
        return {job_id: (r.cron, r.sent_tz or r.tz) for job_id, r in found if r is not None}

    def _registration(self, job: Job) -> Optional[_Registration]:
        """``job``'s registration (``None`` once replaced). ``_sync_lock`` held."""
        registration = self._registrations.get(job.id)
        return registration if registration is not None and registration.job is job else None

    def _cancel(self, job: Job) -> None:
        # Stopped or replaced before its turn: put off (no HTTP call now); sync() registers
        # it if it is still on the manager. A forced (sync-requested) entry stays.
        with self._sync_lock:
            entry = self._queue.get(job.id)
            if entry is not None and entry.job is job and not entry.forced:
                del self._queue[job.id]
                entry.registration.state = "deferred"
                self._sync_lock.notify_all()

    def _release(self) -> None:
        """Drop queued work and release a client this manager made."""
        with self._sync_lock:
            for entry in self._queue.values():
                entry.registration.state = "deferred"
            self._queue.clear()
            self._sync_lock.notify_all()
        if self._lead_lock is not None:
            self._lead_lock.release()  # and close: the worker, if any, ends with the queue
        self._leading = False
        if self._owns_client:
            self.client.close()

    def _reinit_after_fork(self) -> None:
        super()._reinit_after_fork()
        # The worker thread does not exist here, and may have held the lock at the fork.
        self._sync_lock = threading.Condition(threading.Lock())
        self._worker = None
        self._leading = False  # the lock stays the parent's (hostlock forgets the copy)
        entry, self._in_flight = self._in_flight, None
        if entry is not None:
            if entry.job.id in self._queue:
                entry.registration.state = "deferred"
            else:
                entry.registration.state = "queued"
                self._queue = {entry.job.id: entry, **self._queue}
        if self._owns_pool:
            # Pooled connections are shared with the parent: never reuse them here.
            self.client = self._new_client()

    def _scrub(self, text: str) -> str:
        # The config's key, and the client's in case one was handed in with another key.
        return self.client.scrub(scrub(text, self.config.api_key))

    def _format_exception(self, exc: BaseException) -> str:
        return self._scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def remote_payload(job_id: str, schedule_id: str, tz: str, when: datetime) -> Dict[str, Any]:
    """A run's payload as a scheduled fire's (Trigger.dev's ``ScheduledTaskPayload``).

    A fire's payload reaches the task with ``Date`` objects; a payload sent through the
    API is plain JSON, so the times here are ISO 8601 strings (milliseconds, ``Z``), which
    the dispatcher task reads as well. ``scheduleId`` is the schedule's deduplication key,
    by which the API also finds it.
    """
    stamp = when.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return {
        "scheduleId": schedule_id,
        "type": "IMPERATIVE",
        "timestamp": stamp.replace("+00:00", "Z"),
        "externalId": job_id,
        "timezone": tz,
        "upcoming": [],
    }


_LIMIT_MESSAGE = re.compile(r"You have created (\d+)/(\d+) schedules")


def _limit_error(job_id: str, error: TriggerDevError) -> Optional[TriggerDevError]:
    """The server's 422 at the plan's schedule limit, as an error that says what to do."""
    found = _LIMIT_MESSAGE.search(error.message)
    if found is None:
        return None
    used, limit = found.groups()
    return TriggerDevError(
        f"job {job_id!r}: the Trigger.dev project is at its plan's schedule limit "
        f"({used}/{limit} schedules; the Free plan allows 10 per project, and the staging, "
        "production and preview environments all count, development does not). Delete "
        "schedules no job uses (`bgjobs sync APP --prune`), deactivate some, or upgrade the "
        f"plan. The server said: {error.message}",
        status=error.status,
        path=error.path,
    )


def _brief(error: TriggerDevError) -> str:
    return (f"HTTP {error.status}: " if error.status is not None else "") + error.message


def _worker_main(ref: weakref.ReferenceType[TriggerDevJobManager]) -> None:
    """The registration thread: holds the manager only while it registers one job."""
    while True:
        manager = ref()
        if manager is None:
            return  # garbage collected: nobody is left to report to
        try:
            if not manager._work_once():
                return
        except BaseException as exc:
            manager._worker_crashed(exc)
            return
        finally:
            del manager


def _remote_spec(job_id: str, schedule: Schedule) -> Tuple[str, str]:
    """The 5-field cron and IANA timezone name the job's schedule has on Trigger.dev."""
    cron = to_five_field_cron(job_id, schedule)
    if not isinstance(schedule, CronSchedule):
        return cron, "UTC"
    tz = schedule.tz
    name = getattr(tz, "key", None)
    if name:
        return cron, str(name)
    try:
        fixed_utc = tz.utcoffset(None) == timedelta(0)
    except Exception:
        fixed_utc = False
    if fixed_utc:
        return cron, "UTC"
    raise InvalidScheduleError(
        f"job {job_id!r}: timezone {tz!r} has no IANA name, which Trigger.dev requires; "
        "pass a name like 'Europe/Paris'"
    )


# -- the deploy step: `bgjobs sync APP [--prune]` -------------------------------------------


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_registry` did: job ids by outcome, in scheduling order."""

    created: List[str] = field(default_factory=list)
    updated: List[str] = field(default_factory=list)
    unchanged: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    schedules: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    """Job id → (5-field cron, timezone) as registered, for :meth:`lines`."""

    def lines(self) -> List[str]:
        """One human line per job: ``created  repository-sync  */5 * * * *  UTC``."""
        out: List[str] = []
        groups = (("created", self.created), ("updated", self.updated))
        for outcome, job_ids in (*groups, ("unchanged", self.unchanged)):
            for job_id in job_ids:
                cron, tz = self.schedules.get(job_id, ("", ""))
                out.append("  ".join(part for part in (outcome, job_id, cron, tz) if part))
        out.extend(f"removed  {job_id}" for job_id in self.removed)
        return out


def sync_registry(
    registry: JobRegistry,
    *,
    manager: Optional[TriggerDevJobManager] = None,
    env: Optional[Mapping[str, Any]] = None,
    settings: Optional[Settings] = None,
    prune: bool = False,
    timeout: Optional[float] = None,
) -> SyncReport:
    """Register every job of ``registry`` on Trigger.dev and wait for it (``bgjobs sync``).

    Without ``manager`` one is built from ``settings`` (default: read from ``env``, default
    ``os.environ``); Trigger.dev must
    be fully configured (``TRIGGER_DEV_ENABLED`` is not required: this is an explicit
    deploy step). Every schedule is checked before any request, so a job Trigger.dev cannot
    run (a 7-minute interval) fails with :class:`~bgjobs.errors.InvalidScheduleError` and
    nothing is sent. With ``prune``, schedules of this environment whose job is no longer
    declared are deleted afterwards. Raises what :meth:`TriggerDevJobManager.sync` raises.
    """
    settings = manager.settings if manager is not None else Settings.coerce(settings, env)
    for definition in registry.definitions():
        _remote_spec(definition.id, definition.to_schedule(settings.timezone))
    owned = manager is None
    if manager is None:
        _require_configured(settings.trigger_dev)
        manager = TriggerDevJobManager(settings.trigger_dev, settings=settings)
    try:
        registry.apply(manager)
        outcomes = manager.sync(timeout)
        removed = manager.prune() if prune else []
    finally:
        if owned:
            manager.close()
    by_outcome: Dict[str, List[str]] = {"created": [], "updated": [], "unchanged": []}
    for job_id, outcome in outcomes.items():
        by_outcome[outcome].append(job_id)
    return SyncReport(
        created=by_outcome["created"],
        updated=by_outcome["updated"],
        unchanged=by_outcome["unchanged"],
        removed=removed,
        schedules=manager._remote_specs(),
    )


def _require_configured(config: TriggerDevConfig) -> None:
    """Refuse a config Trigger.dev cannot be used with, naming the setting to fix."""
    problem = config.problem
    if problem is not None:
        raise ValueError(f"Trigger.dev is not configured: {problem}")
