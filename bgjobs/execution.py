"""The execution core: run a job once, and the job table every manager shares.

Every way a job can start — a timer tick, :meth:`~BaseJobManager.trigger_job`, an HTTP
dispatch from Vercel or Trigger.dev, ``bgjobs exec`` — goes through
:meth:`BaseJobManager.run`. It takes the job's overlap lock without blocking (a busy job is
skipped and counted, never queued), records status and metrics, turns an exception into
a ``failed`` status plus an ERROR log with the traceback, and runs ``async def`` jobs on
an event loop of their own. Managers differ only in *what starts a run*: they implement
:meth:`BaseJobManager._start` and :meth:`BaseJobManager._cancel`.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import logging
import os
import threading
import traceback
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterable,
    List,
    Literal,
    Mapping,
    Optional,
    Set,
    Tuple,
)

from . import _missed_fires, _time
from ._deadlines import DeadlineWatcher
from ._ids import new_run_id
from ._process import end_process_if_main_thread
from .config import Settings
from .errors import InvalidScheduleError, JobNotFoundError
from .listeners import JobEvent, Listener, ListenerSet
from .metrics import MetricsAggregator
from .policies import JobPolicy, check_seconds, make_policy
from .registry import JobDefinition, validate_job
from .running import CURRENT, RunHandle
from .schedules import (
    Clock,
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
    SystemClock,
    parse_cron,
    parse_interval,
    resolve_timezone,
    utc_datetime,
)
from .store import FireClaim, JobRecord, MemoryStore, StateStore, evolve, open_store
from .types import (
    BackgroundJobManager,
    Interval,
    JobFunc,
    JobMetrics,
    JobRun,
    JobStatus,
    JobStatusType,
    RunTrigger,
    TimezoneArg,
)

__all__ = [
    "BaseJobManager",
    "DispatchOutcome",
    "DispatchResult",
    "Job",
    "RunContext",
    "call_job",
]

logger = logging.getLogger(__name__)

DispatchOutcome = Literal["ran", "busy", "stopped", "paused", "not_found", "accepted", "duplicate"]
"""What a dispatch did: ran the job; found it running, stopped here, or paused; found no
such job; started it off the caller's thread (``accepted``); or found its idempotency key
used before (``duplicate``: the earlier run answers)."""


_RunOutcome = Literal["ran", "busy", "duplicate", "accepted", "refused"]
"""What :meth:`BaseJobManager._run` did; ``refused``: a scheduled run of a stopped job."""


@dataclass(frozen=True)
class DispatchResult:
    """The answer to :meth:`BaseJobManager.dispatch`."""

    outcome: DispatchOutcome
    status: Optional[JobStatus]
    """The job's status afterwards; ``None`` if there is no such job."""
    run: Optional[JobRun] = None
    """This run (still ``running`` when ``accepted``); for ``duplicate``, the run recorded
    earlier under the key."""


class _PendingRetry:
    """A failed scheduled run's next attempt, waiting for its backoff with the job's locks."""

    __slots__ = ("attempt", "job", "policy", "scheduled_for", "taken", "timer")

    def __init__(
        self, job: Job, policy: JobPolicy, attempt: int, scheduled_for: Optional[datetime]
    ) -> None:
        self.job = job
        self.policy = policy
        self.attempt = attempt
        self.scheduled_for = scheduled_for
        self.taken = False  # run or dropped: whoever takes it first acts
        self.timer: Optional[Callable[[], None]] = None  # cancels the armed timer


@functools.cache
def _host_name() -> str:
    """This machine's name, for run records (looked up once)."""
    import socket

    return socket.gethostname()


def _pid_alive(host: str, pid: int) -> bool:
    """Whether a run's process may still be running (another host's: assumed so)."""
    if host != _host_name() or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


def _log_extra(job_id: str, run_id: str, trigger: str) -> Dict[str, str]:
    """The ``extra`` of a run's log records: a handler or formatter can use
    ``%(job_id)s``, ``%(run_id)s`` and ``%(trigger)s``."""
    return {"job_id": job_id, "run_id": run_id, "trigger": trigger}


RunContext = Callable[[], ContextManager[Any]]
"""A factory for a context every run happens inside, e.g. Flask's ``app.app_context``."""


def call_job(func: JobFunc) -> None:
    """Call ``func``; if it returns an awaitable (an ``async def`` job), run it to completion."""
    result = func()
    if hasattr(result, "__await__"):
        _run_awaitable(result)


def _run_awaitable(awaitable: Any) -> None:
    import asyncio  # costly to import; only async jobs pay for it

    async def _await() -> None:
        await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_await())
        return
    # Called from a thread that already runs a loop (e.g. trigger_job inside async code):
    # asyncio.run() would refuse, so give the job a loop on a thread of its own.
    failure: List[BaseException] = []

    def _worker() -> None:
        try:
            asyncio.run(_await())
        except BaseException as exc:
            failure.append(exc)

    # The job's context (current_run()) goes with it to the loop's thread.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(_worker,), name="bgjobs-async", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


class _History:
    """What a job's runs left behind: shared by a job and the ones that replace it (the id
    is the same job). Guarded by the owning jobs' shared lock."""

    __slots__ = (
        "duration",
        "error",
        "failures",
        "last_error",
        "last_failure",
        "last_run",
        "last_success",
        "outcome",
        "run_of",
        "running",
        "runs",
        "skips",
        "starved_fires",
        "stopped_when_run_began",
        "timed_out",
    )

    def __init__(self) -> None:
        self.running = False
        self.run_of: Optional[Job] = None  # the definition whose run is (or was last) going
        self.stopped_when_run_began = False
        self.timed_out = False  # the current (or last) run passed its timeout
        self.outcome: JobStatusType = "scheduled"  # last run's outcome
        self.last_run: Optional[datetime] = None
        self.duration = 0.0
        self.error: Optional[str] = None
        self.runs = 0
        self.failures = 0
        self.skips = 0
        self.starved_fires = 0
        self.last_success: Optional[datetime] = None
        self.last_failure: Optional[datetime] = None
        self.last_error: Optional[str] = None


class Job:
    """One job: its definition and its live state.

    The definition (``id``, ``name``, ``func``, ``schedule``) never changes; replacing a
    job makes a new :class:`Job` that continues the old one (:meth:`continue_from`): it
    inherits the ``run_lock``, so the old and new schedules can never run the job twice at
    once, and the counters and last run, so a replacement loses no history. The live state
    is private: every method below takes the job's own lock, so runtimes never lock a job
    themselves.

    Shown status: ``running`` while a run is going (unless the job was stopped during it),
    else ``stopped`` once stopped, else the last run's outcome (``scheduled`` before one).
    """

    def __init__(
        self,
        job_id: str,
        name: str,
        func: JobFunc,
        schedule: Optional[Schedule],
        *,
        run_lock: Optional[threading.Lock] = None,
        policy: Optional[JobPolicy] = None,
    ) -> None:
        self.id = job_id
        self.name = name
        self.func = func
        self.schedule = schedule
        #: Timeout, retries, misfire grace, jitter; ``None`` when the job has none.
        self.policy = policy
        # Held for the whole of a run, acquired without blocking: the overlap guard.
        self.run_lock = run_lock or threading.Lock()
        # Guards every field below and the history's; held only for assignments, never
        # across a job call. A replacement shares it with the job it replaces.
        self._lock = threading.Lock()
        self._h = _History()
        self._stopped = False  # the schedule is cancelled (runs may still be triggered)
        self._next_run: Optional[datetime] = None
        self._runner: Optional[str] = None
        self._sync_error: Optional[str] = None
        #: (monotonic, wall) clock readings as scheduling it began: its first due time
        #: counts from the call, not from after the lock files and records it set up.
        self.called_at: Optional[Tuple[float, float]] = None

    def continue_from(self, old: Job) -> None:
        """Make this job (not installed yet) the same job as ``old``, which it replaces:
        the overlap lock and the run history and counters are shared, so a run of ``old``
        still going shows here and is counted here when it ends."""
        self.run_lock = old.run_lock
        self._lock = old._lock
        self._h = old._h

    @property
    def description(self) -> str:
        return self.schedule.description if self.schedule is not None else "manual"

    # -- reading ------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """The job's schedule was cancelled (:meth:`stop`)."""
        with self._lock:
            return self._stopped

    @property
    def next_run(self) -> Optional[datetime]:
        with self._lock:
            return self._next_run

    def _status(self) -> JobStatusType:
        h = self._h
        if h.running and (
            self._stopped == h.stopped_when_run_began if h.run_of is self else not self._stopped
        ):
            return "running"
        return "stopped" if self._stopped else self._h.outcome

    @property
    def status(self) -> JobStatusType:
        with self._lock:
            return self._status()

    def snapshot(self) -> JobStatus:
        with self._lock:
            status = self._status()
            return JobStatus(
                id=self.id,
                name=self.name,
                status=status,
                last_run=self._h.last_run,
                next_run=self._next_run,
                duration=self._h.duration,
                error=self._h.error if status == "failed" else None,
                schedule=self.description,
                runs=self._h.runs,
                failures=self._h.failures,
                skips=self._h.skips,
                runner=self._runner,
                last_sync_error=self._sync_error,
                last_success=self._h.last_success,
                last_failure=self._h.last_failure,
                last_error=self._h.last_error,
                timed_out=self._h.timed_out,
                starved_fires=self._h.starved_fires,
            )

    # -- what runtimes change -------------------------------------------------------------

    def stop(self) -> bool:
        """Cancel the schedule: ``stopped``, no ``next_run``. ``False`` if already stopped."""
        with self._lock:
            was, self._stopped, self._next_run = self._stopped, True, None
            return not was

    def if_live(self, action: Callable[[], None]) -> bool:
        """Call ``action`` (which must not block) unless the job is stopped; ``True`` if
        called. A concurrent :meth:`stop` happens entirely before or after it, so a runtime
        arming a timer here either sees the stop or has its timer seen by the stop."""
        with self._lock:
            if self._stopped:
                return False
            action()
            return True

    def set_next_run(self, when: Optional[datetime], *, expected: object = ...) -> bool:
        """Show ``when`` as the next run, unless stopped (or ``next_run`` is no longer
        ``expected``, when given); ``True`` if set."""
        with self._lock:
            if self._stopped or (expected is not ... and self._next_run != expected):
                return False
            self._next_run = when
            return True

    def set_runner(self, runner: Optional[str], *, unless_stopped: bool = False) -> None:
        """Which process runs this schedule (multi-process modes); ``None`` clears it."""
        with self._lock:
            if not (unless_stopped and self._stopped):
                self._runner = runner

    def set_sync_error(self, error: Optional[str]) -> None:
        """Why the last remote registration failed; ``None`` clears it."""
        with self._lock:
            self._sync_error = error

    def count_skips(self, count: int = 1) -> None:
        with self._lock:
            self._h.skips += count

    def count_starved(self) -> None:
        """One scheduled fire waited too long for a free worker."""
        with self._lock:
            self._h.starved_fires += 1

    # -- what the core changes ----------------------------------------------------------

    def _begin_run(self, now: datetime, *, scheduled: bool) -> bool:
        with self._lock:
            if scheduled and self._stopped:
                return False
            self._h.running = True
            self._h.run_of = self
            self._h.stopped_when_run_began = self._stopped
            self._h.last_run = now
            self._h.timed_out = False
            return True

    def _flag_timed_out(self) -> None:
        with self._lock:
            self._h.timed_out = True

    def _end_run(self, duration: float, error: Optional[str], timed_out: bool = False) -> None:
        with self._lock:
            self._h.running = False
            self._h.timed_out = timed_out
            self._h.duration = duration
            self._h.runs += 1
            if error is not None:
                self._h.failures += 1
            self._h.outcome = "completed" if error is None else "failed"
            self._h.error = error
            if error is None:
                self._h.last_success = self._h.last_run
            else:
                self._h.last_failure, self._h.last_error = self._h.last_run, error

    def _unstop(self, next_run: Optional[datetime]) -> None:
        """Undo :meth:`stop` (a failed replacement puts the old job back)."""
        with self._lock:
            self._stopped, self._next_run = False, next_run

    def _after_fork(self, *, running_here: bool) -> None:
        """In a forked child: new locks; a run of a thread that did not survive is over."""
        self._lock = threading.Lock()
        self.run_lock = threading.Lock()
        if running_here:
            self.run_lock.acquire()
        else:
            self._h.running = False

    def __repr__(self) -> str:
        return f"<Job {self.id!r} {self.description} {self.status}>"


class BaseJobManager(BackgroundJobManager):
    """A :class:`BackgroundJobManager` with the job table and the execution core built in.

    Subclasses say what starts runs by implementing :meth:`_start` (called under the
    table lock when a job is installed) and :meth:`_cancel` (when it is stopped or
    replaced); they may veto a schedule in :meth:`_check_schedule`, release resources in
    :meth:`_release` and rebuild what a fork broke in :meth:`_reinit_after_fork` (calling
    ``super()``).
    """

    def __init__(
        self,
        *,
        clock: Optional[Clock] = None,
        settings: Optional[Settings] = None,
        env: Optional[Mapping[str, Any]] = None,
        store: Optional[StateStore] = None,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self.settings = Settings.coerce(settings, env)
        # Run history, idempotency keys and pause flags of this process; the fallback
        # whenever the shared store is degraded, so nothing is lost.
        self._memory = MemoryStore(clock=self._clock)
        #: The host's store (state.db in the state directory), or None: memory only.
        self.store: Optional[StateStore] = store
        #: Whether this manager opened its store (and closes it when it shuts down).
        self._owns_store = False
        if store is None and self.settings.lock_dir:
            self.store = open_state_store(self.settings, clock=self._clock)
            self._owns_store = True
        self._reaped_at = -1e9  # monotonic time of the last look for abandoned runs
        # The shared store's paused job ids, read at most every _PAUSE_REFRESH seconds so a
        # scheduled fire costs no extra query; (monotonic read time, ids).
        self._paused_seen: Tuple[float, Set[str]] = (-1e9, set())
        self._pause_refresh = threading.Lock()  # one thread at a time reads them again
        self._paused_reread = False  # a fire answered from a stale set: read after its run
        # Guards _jobs (id -> Job, in scheduling order) and _closed. Never held across a
        # job call.
        self._jobs_lock = threading.RLock()
        self._jobs: Dict[str, Job] = {}
        self._closed = False
        clock = self._clock  # not self: a lambda holding self would make a reference cycle
        self._metrics = MetricsAggregator(lambda: utc_datetime(clock.time()))
        # Guards _running (thread ident -> job id of the run on that thread); notified
        # whenever a run ends so stop_all_jobs(wait=True) can wake up.
        self._idle = threading.Condition(threading.Lock())
        self._running: Dict[int, str] = {}
        self._waiting: Dict[int, int] = {}  # thread ident -> nested wait_idle() calls
        self._run_context: Optional[RunContext] = None
        # Guarded by _idle too: run id -> the handle of each run going on in this process
        # (what shutdown cancels).
        self._handles: Dict[str, RunHandle] = {}
        self._listeners = ListenerSet()
        # Created with the first run that has a timeout: most managers never need it.
        self._deadlines: Optional[DeadlineWatcher] = None
        # Guards _retries (job -> its retry waiting for its backoff, holding the job's
        # locks) and every _PendingRetry's taken flag.
        self._retries_lock = threading.Lock()
        self._retries: Dict[Job, _PendingRetry] = {}
        _track(self)

    def _reinit_after_fork(self) -> None:
        """In a forked child, replace every lock: a thread that no longer exists may have
        held one at fork time. Runs of the forking thread continue, so their run locks are
        taken again. Subclasses extend this (calling ``super()`` first) to rebuild and
        re-arm what triggers their runs."""
        me = threading.get_ident()
        self._jobs_lock = threading.RLock()
        self._idle = threading.Condition(threading.Lock())
        self._running = {ident: job_id for ident, job_id in self._running.items() if ident == me}
        self._handles = {
            k: h for k, h in self._handles.items() if h.job_id in self._running.values()
        }
        self._waiting = {}
        self._retries_lock = threading.Lock()
        self._retries = {}  # their timers did not survive the fork (nor the locks they held)
        self._pause_refresh = threading.Lock()
        self._listeners.reinit_after_fork()
        if self._deadlines is not None:
            self._deadlines.reinit_after_fork()
        self._metrics.reinit_after_fork()
        continuing = set(self._running.values())
        for job in self._jobs.values():
            job._after_fork(running_here=job.id in continuing)
        self._memory.reinit_after_fork()
        if self.store is not None:
            self.store.reinit_after_fork()

    def _after_fork_in_parent(self) -> None:
        """In the process that just forked (on a thread of its own, never the forking
        one). Subclasses extend this to hand work over to the child."""

    # -- hooks for subclasses ---------------------------------------------------------

    def _start(self, job: Job) -> None:
        """Begin triggering runs of a freshly installed job. Called with the table lock held."""

    def _cancel(self, job: Job) -> None:
        """Stop triggering runs of ``job`` (stopped or replaced). Must not block on a run."""

    def _restore(self, job: Job) -> None:
        """Put back ``job``, cancelled for a replacement that failed, as it was (its next
        due time unchanged). Called with the table lock held; defaults to :meth:`_start`."""
        self._start(job)

    def _check_schedule(self, job_id: str, schedule: Schedule) -> None:
        """Raise :class:`~bgjobs.errors.InvalidScheduleError` if this runtime cannot run it."""

    def _try_claim(self, job: Job) -> bool:
        """Claim the run beyond this process (e.g. a host-wide lock). ``False`` = busy."""
        return True

    def _release_claim(self, job: Job) -> None:
        """Release what :meth:`_try_claim` took."""

    def _release(self) -> None:
        """Release threads, files and connections for good (:meth:`close`, once), before
        the running jobs are awaited (the store is released after them: see
        :meth:`_release_store`). Subclasses extend this, calling ``super()`` last."""

    # -- configuration ----------------------------------------------------------------

    def set_run_context(self, factory: Optional[RunContext]) -> None:
        """Run every job inside ``factory()`` (e.g. ``app.app_context``); ``None`` to clear."""
        self._run_context = factory

    # -- scheduling ---------------------------------------------------------------------

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
        validate_job(id, name, job)
        schedule = IntervalSchedule(parse_interval(id, interval))
        policy = make_policy(
            id,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            misfire_grace=misfire_grace,
            jitter=jitter,
        )
        self._install(Job(id, name, job, schedule, policy=policy))

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
        validate_job(id, name, job)
        tz = resolve_timezone(id, timezone, self.settings.timezone)
        policy = make_policy(
            id,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            misfire_grace=misfire_grace,
            jitter=jitter,
        )
        self._install(Job(id, name, job, parse_cron(id, cron_expression, tz), policy=policy))

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
        """See :meth:`BackgroundJobManager.schedule_once`. A time already past runs at
        once (unless later than ``misfire_grace``)."""
        validate_job(id, name, job)
        policy = make_policy(
            id,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            misfire_grace=misfire_grace,
            jitter=jitter,
        )
        self._install(Job(id, name, job, self._once_schedule(id, at, delay), policy=policy))

    def _once_schedule(
        self, job_id: str, at: Optional[datetime], delay: Optional[Interval]
    ) -> OnceSchedule:
        if at is not None and delay is not None:
            raise TypeError(f"job {job_id!r}: give at= or delay=, not both")
        if at is not None:
            if not isinstance(at, datetime):
                raise TypeError(f"job {job_id!r}: at must be a datetime, got {at!r}")
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError(
                    f"job {job_id!r}: at must be timezone-aware, got naive {at!r}; use e.g. "
                    "datetime(..., tzinfo=timezone.utc)"
                )
            return OnceSchedule(at.timestamp())
        seconds = 0.0
        if delay is not None:
            seconds = check_seconds(job_id, "delay", delay, positive=False)
        return OnceSchedule(self._clock.time() + seconds)

    def add_job(self, definition: JobDefinition, *, scheduled: bool = True) -> None:
        """Install a registry's declared job, on its schedule (a cron without a timezone
        uses ``BGJOBS_TIMEZONE``) or, with ``scheduled=False``, unscheduled: it then runs
        only when triggered or dispatched (``bgjobs exec``)."""
        schedule = definition.to_schedule(self.settings.timezone) if scheduled else None
        self._install(
            Job(definition.id, definition.name, definition.func, schedule, policy=definition.policy)
        )

    def _check_policy(self, job_id: str, policy: JobPolicy, schedule: Optional[Schedule]) -> None:
        """Raise :class:`~bgjobs.errors.InvalidScheduleError` for a policy this runtime
        cannot honour. Subclasses extend it (calling ``super()``)."""
        if (
            policy.jitter
            and isinstance(schedule, IntervalSchedule)
            and policy.jitter >= schedule.seconds
        ):
            raise InvalidScheduleError(
                f"job {job_id!r}: jitter={policy.jitter:g}s must be less than the interval "
                f"({schedule.seconds:g}s), or fires would change places"
            )

    def _install(self, job: Job) -> None:
        job.called_at = (self._clock.monotonic(), self._clock.time())
        if job.schedule is not None:
            self._check_schedule(job.id, job.schedule)
        if job.policy is not None:
            self._check_policy(job.id, job.policy, job.schedule)
        with self._jobs_lock:
            if self._closed:
                raise RuntimeError(
                    f"cannot schedule job {job.id!r}: this {type(self).__name__} has been shut "
                    "down (closed)"
                )
            old = self._jobs.get(job.id)
            if old is not None:
                old_next_run = old.next_run
                job.continue_from(old)
                was_live = old.stop()
                self._cancel(old)
                self._drop_retry(old)
            self._jobs[job.id] = job
            try:
                self._start(job)
            except BaseException:
                # Nothing half-registered: put back what was there, running as before.
                if old is None:
                    del self._jobs[job.id]
                else:
                    self._jobs[job.id] = old
                    if was_live:
                        old._unstop(old_next_run)
                        self._restore(old)
                raise
        logger.debug("scheduled job %r (%s): %s", job.id, job.name, job.description)

    def policy_of(self, id: str) -> Optional[JobPolicy]:
        """The policies job ``id`` was scheduled with (``None``: none, or no such job)."""
        job = self._job(id)
        return job.policy if job is not None else None

    def _job(self, job_id: str) -> Optional[Job]:
        with self._jobs_lock:
            return self._jobs.get(job_id)

    def _all_jobs(self) -> List[Job]:
        with self._jobs_lock:
            return list(self._jobs.values())

    # -- stopping -----------------------------------------------------------------------

    def stop_job(self, id: str) -> None:
        job = self._job(id)
        if job is None:
            return
        job.stop()
        self._cancel(job)
        self._drop_retry(job)

    def stop_all_jobs(self, *, wait: bool = False, timeout: Optional[float] = None) -> bool:
        for job in self._all_jobs():
            job.stop()
            self._cancel(job)
            self._drop_retry(job)
        if not wait:
            return not self._others_running()
        if self.wait_idle(timeout):
            return True
        self._log_still_running(
            f"after stop_all_jobs(wait=True, timeout={timeout!r}) waited its timeout; "
            "it returns False"
        )
        return False

    def close(self) -> None:
        """:meth:`shutdown` with the default timeout. Idempotent."""
        self.shutdown()

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Stop every job for good, wait for running ones and release what this manager
        holds (threads, files, connections). Idempotent.

        Waits up to ``timeout`` seconds (``None``: ``BGJOBS_SHUTDOWN_TIMEOUT``, default
        10) for running jobs, a run on the calling thread excepted, and logs a warning
        naming each one still running then. Returns ``True`` if none is. Afterwards
        scheduling raises ``RuntimeError``; ``trigger_job`` still works. Every live manager
        is shut down like this at interpreter exit.
        """
        self._stop_for_good()
        done = self._await_runs(self.settings.shutdown_timeout if timeout is None else timeout)
        self._deliver_last_events()
        self._release_store(done)
        return done

    def _release_store(self, idle: bool) -> None:
        """After the runs ended: write what the store queued, and close a store this manager
        opened. A run still going (``idle`` false) keeps it open, for its end to be recorded
        when it comes (or at interpreter exit)."""
        store = self.store
        if store is None:
            return
        if idle and self._owns_store:
            store.close()
        elif not store.flush(STORE_FLUSH_SECONDS):
            logger.warning(
                "bgjobs: the state store %s did not take the queued run records within %gs "
                "of shutting down; they are written when it can",
                store.path,
                STORE_FLUSH_SECONDS,
            )

    def _deliver_last_events(self) -> None:
        """Give listeners up to :data:`LISTENER_FLUSH_SECONDS` to receive the events of the
        runs that just ended (a failure alert sent on the way out is the useful kind)."""
        if self._listeners.entries and not self._listeners.flush(LISTENER_FLUSH_SECONDS):
            logger.warning(
                "bgjobs: listeners did not take every event within %gs of closing; the rest "
                "are dropped",
                LISTENER_FLUSH_SECONDS,
            )

    def _stop_for_good(self) -> None:
        """Refuse new schedules, stop every job, release resources (the last once)."""
        with self._jobs_lock:
            first, self._closed = not self._closed, True
        self.stop_all_jobs()
        with self._idle:
            handles = list(self._handles.values())
        for handle in handles:  # a cooperative job sees current_run().cancelled and ends
            handle.cancel()
        if first:
            self._release()

    def _await_runs(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for running jobs; log each one left, by name."""
        if self.wait_idle(max(0.0, wait)):
            return True
        self._log_still_running(
            f"after the {self.settings.shutdown_timeout:g}s shutdown timeout; not waiting "
            "for it (BGJOBS_SHUTDOWN_TIMEOUT sets the timeout)"
        )
        return False

    def _others_running(self) -> List[str]:
        """Ids of the jobs running now on threads other than the calling one."""
        me = threading.get_ident()
        with self._idle:
            return [job_id for ident, job_id in self._running.items() if ident != me]

    def _log_still_running(self, what: str) -> None:
        """A warning per job still running (a run on the calling thread excepted)."""
        for job_id in self._others_running():
            job = self._job(job_id)
            logger.warning(
                "job %r (%s) is still running %s",
                job_id,
                job.name if job is not None else "?",
                what,
            )

    @property
    def closed(self) -> bool:
        """:meth:`close` was called."""
        with self._jobs_lock:
            return self._closed

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until no job runs (a run on the calling thread excepted), or ``timeout``.

        Returns ``True`` when idle, ``False`` when the timeout passed first.
        """
        me = threading.get_ident()
        with self._idle:
            # A job waiting here does not wait for runs that are themselves waiting here:
            # two jobs calling stop_all_jobs(wait=True) at once would otherwise wait for
            # each other forever. Waiters outside any run still wait for every run.
            self._waiting[me] = self._waiting.get(me, 0) + 1
            self._idle.notify_all()
            inside_run = me in self._running
            try:
                return self._idle.wait_for(
                    lambda: all(
                        i == me or (inside_run and i in self._waiting) for i in self._running
                    ),
                    timeout,
                )
            finally:
                self._waiting[me] -= 1
                if not self._waiting[me]:
                    del self._waiting[me]

    def running_job_ids(self) -> List[str]:
        """Ids of the jobs running right now in this process."""
        with self._idle:
            return list(self._running.values())

    # -- running --------------------------------------------------------------------------

    def run(self, job: Job, *, trigger: RunTrigger = "manual") -> bool:
        """Run ``job`` once in the calling thread unless it is already running.

        Returns ``False`` (and counts a skip) when the job is busy; otherwise runs it,
        records the outcome and returns ``True``. A job's exception is logged at ERROR
        with its traceback and never propagates.
        """
        return self._run(job, trigger=trigger)[0] == "ran"

    def run_scheduled(
        self,
        job: Job,
        scheduled_for: Optional[datetime] = None,
        *,
        claim: Optional[FireClaim] = None,
    ) -> bool:
        """Like :meth:`run`, for a run the schedule started (a timer tick) for its due time
        ``scheduled_for``.

        The run does not start (``False``, not counted as a skip) if the job was stopped or
        replaced — that check and the switch to ``running`` happen under the job's lock,
        so once :meth:`stop_job` has returned no scheduled run of the job can begin — nor
        while it is paused, nor when another process sharing the state store has already
        claimed this due time (each fire runs once on the host, by construction).

        ``claim``: the fire's claim, made ahead by the process leading the job's schedule
        (:meth:`StateStore.claim_fire_ahead`); without one, the fire is claimed here.
        """
        try:
            if self._is_paused(job.id, after_run=True):
                logger.debug("job %r is paused: its fire at %s does not run", job.id, scheduled_for)
                return False
            store = self.store
            if (
                store is not None
                and scheduled_for is not None
                and not self._claim_fire(store, job, scheduled_for, claim)
            ):
                logger.info(
                    "job %r: its fire at %s was already run by another process",
                    job.id,
                    scheduled_for.isoformat(),
                )
                return False
            return (
                self._run(job, scheduled=True, trigger="schedule", scheduled_for=scheduled_for)[0]
                == "ran"
            )
        finally:
            if self._paused_reread:
                self._read_paused(wait=False)

    @staticmethod
    def _claim_fire(
        store: StateStore, job: Job, scheduled_for: datetime, claim: Optional[FireClaim]
    ) -> bool:
        """Whether this process runs the fire: its claim ahead if any, else a claim now."""
        won = claim.won() if claim is not None else None
        if won is None:  # no claim ahead, or undecided (a fork, a stuck writer)
            won = store.claim_fire(job.id, scheduled_for)
        if won or claim is None:
            return won
        # Claimed ahead by a process that led the job before this one: it never ran this
        # fire (a leader only arms fires after the last one its predecessor took), unless
        # a run of it is on record, which the store checks.
        if store.retake_fire(job.id, scheduled_for):
            logger.info(
                "job %r: took over its fire at %s from a process that no longer leads it",
                job.id,
                scheduled_for.isoformat(),
            )
            return True
        return False

    def _run(
        self,
        job: Job,
        *,
        trigger: RunTrigger,
        scheduled: bool = False,
        scheduled_for: Optional[datetime] = None,
        run_key: Optional[str] = None,
        background: bool = False,
    ) -> Tuple[_RunOutcome, Optional[JobRun]]:
        """Claim and run ``job``: ``("ran", run)``, ``("busy", None)``, ``("duplicate",
        earlier run)``, ``("accepted", run)`` (``background``: running on a thread of its
        own) or ``("refused", None)`` (a scheduled run of a stopped job)."""
        run_id = new_run_id()
        if run_key is not None:
            # The key first: a repeat of a run still going is a duplicate, not "busy".
            owner = self._claim_key(run_key, run_id)
            if owner is not None:
                return "duplicate", self.get_run(owner) or JobRun(
                    owner, job.id, trigger, utc_datetime(self._clock.time())
                )
        if not job.run_lock.acquire(blocking=False):
            self._release_key(run_key, run_id)
            self.record_skips(job)
            return "busy", None
        handed_over = False
        try:
            if not self._try_claim(job):
                self._release_key(run_key, run_id)
                self.record_skips(job)
                return "busy", None
            try:
                if not background:
                    result = self._execute(job, run_id, trigger, scheduled, scheduled_for)
                    policy = job.policy
                    if scheduled and policy is not None and policy.retries:
                        handed_over = self._retry_later(job, policy, result[1], scheduled_for)
                    return result
                started = self._start_in_background(job, run_id, trigger, scheduled_for)
                handed_over = True  # the run's thread releases the claims
                return ("accepted", started) if started is not None else ("refused", None)
            finally:
                if not handed_over:
                    self._release_claim(job)
        finally:
            if not handed_over:
                job.run_lock.release()

    def _start_in_background(
        self, job: Job, run_id: str, trigger: RunTrigger, scheduled_for: Optional[datetime]
    ) -> Optional[JobRun]:
        """Run ``job`` (claimed) on a thread of its own; its started record once begun."""
        began = threading.Event()
        started: List[JobRun] = []

        def work() -> None:
            try:
                self._execute(job, run_id, trigger, False, scheduled_for, began=started.append)
            except BaseException as exc:  # SystemExit in a job: recorded; the thread ends
                end_process_if_main_thread(exc)  # unless it is all a forked child has left
            finally:
                began.set()
                try:
                    self._release_claim(job)
                finally:
                    job.run_lock.release()

        thread = threading.Thread(target=work, name=f"bgjobs-{job.id}", daemon=True)
        thread.start()
        while not started and thread.is_alive():
            began.wait(0.05)
        return started[0] if started else None

    def record_starved(self, job: Job) -> None:
        """Count a scheduled fire of ``job`` that waited too long for a free worker."""
        job.count_starved()
        self._metrics.record_starved()

    def _waiting_for_worker(self) -> Dict[str, datetime]:
        """Job id -> since when a due fire of it waits for a free worker (runtimes with a
        worker pool override this)."""
        return {}

    def record_skips(self, job: Job, count: int = 1, reason: Optional[str] = None) -> None:
        """Count ``count`` run attempts of ``job`` that did not happen, and say why."""
        job.count_skips(count)
        self._metrics.record_skip(count)
        self._record(lambda store: store.record_skips(job.id, count))
        if self._listeners.entries:
            now = utc_datetime(self._clock.time())
            skipped = JobRun(
                new_run_id(),
                job.id,
                "schedule",
                now,
                finished=now,
                duration=0.0,
                outcome="skipped",
                error=reason or "the job was still running",
                pid=os.getpid(),
                host=_host_name(),
            )
            self._listeners.emit("skipped", skipped)
        if reason is None:
            logger.info(
                "job %r is still running, so this run was skipped (bgjobs never runs a job "
                "twice at once)",
                job.id,
            )
        else:
            logger.info("job %r: skipped %d run(s): %s", job.id, count, reason)

    # -- retries ------------------------------------------------------------------------------

    def _retry_later(
        self, job: Job, policy: JobPolicy, run: Optional[JobRun], scheduled_for: Optional[datetime]
    ) -> bool:
        """After an attempt of a scheduled run: if it failed and retries remain, arm the next
        attempt after its backoff and hand it the job's claimed locks (``True``), so a fire
        due meanwhile finds the job busy — skipped and counted — and a retry never overlaps
        it. The wait holds no thread. ``False``: the caller releases the locks."""
        if run is None or run.outcome in ("completed", "running"):
            return False
        extra = _log_extra(job.id, run.run_id, run.trigger)
        if run.attempt > policy.retries:
            logger.error(
                "job %r (%s): attempt %d failed, the last of %d; no more retries until its "
                "next fire",
                job.id,
                job.name,
                run.attempt,
                policy.retries + 1,
                extra=extra,
            )
            return False
        if job.stopped or self._closed:
            return False
        delay = policy.retry_delay(run.attempt)
        pending = _PendingRetry(job, policy, run.attempt + 1, scheduled_for)
        with self._retries_lock:
            # Registered before it is armed: a stop in between finds it and releases the locks.
            self._retries[job] = pending
        timer = self._call_later(job, delay, lambda: self._run_retry(pending))
        if timer is None:  # a runtime without timers: no retry
            return not self._take_retry(pending)
        pending.timer = timer
        logger.warning(
            "job %r (%s): attempt %d of %d failed; retrying in %.3gs",
            job.id,
            job.name,
            run.attempt,
            policy.retries + 1,
            delay,
            extra=extra,
        )
        return True

    def _call_later(
        self, job: Job, delay: float, callback: Callable[[], None]
    ) -> Optional[Callable[[], None]]:
        """Call ``callback`` on a worker after ``delay`` seconds of the manager's clock;
        returns what cancels it, or ``None`` for a runtime that has no timers."""
        return None

    def _take_retry(self, pending: _PendingRetry) -> bool:
        """Claim ``pending`` for running or dropping it; ``False`` if already claimed."""
        with self._retries_lock:
            if pending.taken:
                return False
            pending.taken = True
            if self._retries.get(pending.job) is pending:
                del self._retries[pending.job]
            return True

    def _run_retry(self, pending: _PendingRetry) -> None:
        """A retry's backoff is over (on a worker): run the attempt with the locks the
        failed one handed over, then arm the next one or release them."""
        if not self._take_retry(pending):
            return
        job = pending.job
        handed_over = False
        try:
            if job.stopped or self._closed or self._is_paused(job.id):
                logger.info("job %r is stopped or paused: its retry does not run", job.id)
                return
            _, run = self._execute(
                job,
                new_run_id(),
                "schedule",
                True,
                pending.scheduled_for,
                attempt=pending.attempt,
            )
            handed_over = self._retry_later(job, pending.policy, run, pending.scheduled_for)
        finally:
            if not handed_over:
                try:
                    self._release_claim(job)
                finally:
                    job.run_lock.release()

    def _drop_retry(self, job: Job) -> None:
        """``job`` was stopped or replaced: cancel its pending retry and free its locks."""
        if not self._retries:
            return
        with self._retries_lock:
            pending = self._retries.get(job)
        if pending is None or not self._take_retry(pending):
            return
        if pending.timer is not None:
            pending.timer()
        logger.info("job %r was stopped: its pending retry is cancelled", job.id)
        try:
            self._release_claim(job)
        finally:
            job.run_lock.release()

    def _execute(
        self,
        job: Job,
        run_id: str,
        trigger: RunTrigger,
        scheduled: bool,
        scheduled_for: Optional[datetime],
        *,
        began: Optional[Callable[[JobRun], None]] = None,
        attempt: int = 1,
    ) -> Tuple[_RunOutcome, Optional[JobRun]]:
        """Run a claimed job in the calling thread and record it everywhere."""
        me = threading.get_ident()
        handle = RunHandle(job.id)
        # Registered before the stopped check, so stop_all_jobs(wait=True) either
        # prevents this run or waits for it.
        with self._idle:
            # A job may trigger another job on its own thread: remember the outer run.
            outer = self._running.get(me)
            self._running[me] = job.id
            self._handles[run_id] = handle
        started = self._clock.monotonic()
        now = utc_datetime(self._clock.time())
        if not job._begin_run(now, scheduled=scheduled):
            self._unregister_run(me, outer, run_id)
            return "refused", None
        run = JobRun(
            run_id=run_id,
            job_id=job.id,
            trigger=trigger,
            started=now,
            scheduled_for=scheduled_for,
            attempt=attempt,
            pid=os.getpid(),
            host=_host_name(),
        )
        handle.run = run
        self._record(lambda store: store.start_run(run))
        if began is not None:
            began(run)
        listeners = self._listeners
        if listeners.entries:
            listeners.emit("started", run)
        timeout = job.policy.timeout if job.policy is not None else None
        if timeout is not None:
            self._watch_deadline(job, handle, started + timeout, timeout)
        debug = logger.isEnabledFor(logging.DEBUG)
        error: Optional[str] = None
        trace: Optional[str] = None
        token = CURRENT.set(handle)
        try:
            if debug:
                logger.debug(
                    "job %r (%s) started",
                    job.id,
                    job.name,
                    extra=_log_extra(job.id, run_id, trigger),
                )
            if self._run_context is None:
                call_job(job.func)
            else:
                with self._run_context():
                    call_job(job.func)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            trace = traceback.format_exc()
            logger.error(
                "job %r (%s) failed after %.3fs: %s",
                job.id,
                job.name,
                self._clock.monotonic() - started,
                error,
                exc_info=True,
                extra=_log_extra(job.id, run_id, trigger),
            )
        except BaseException as exc:  # SystemExit/KeyboardInterrupt: record, then let go
            error = f"{type(exc).__name__}: {exc}"
            trace = traceback.format_exc()
            raise
        finally:
            CURRENT.reset(token)
            duration = self._clock.monotonic() - started
            timed_out = timeout is not None and self._ended_past_deadline(
                job, handle, duration, timeout
            )
            if timed_out:
                error = f"TimeoutError: ran {duration:.3f}s, past its {timeout:g}s timeout" + (
                    f"; then {error}" if error is not None else ""
                )
                logger.error(
                    "job %r (%s) timed out: ran %.3fs, past its %gs timeout",
                    job.id,
                    job.name,
                    duration,
                    timeout,
                    extra=_log_extra(job.id, run_id, trigger),
                )
            job._end_run(duration, error, timed_out)
            self._metrics.record_run(duration, succeeded=error is None, timed_out=timed_out)
            run = evolve(
                run,
                finished=utc_datetime(self._clock.time()),
                duration=duration,
                outcome="timed_out" if timed_out else "completed" if error is None else "failed",
                error=error,
                traceback=trace,
            )
            finished = run
            # A child the job forked continues the run on its copy of this thread (and may
            # leave by sys.exit), but the run is the parent's: only the parent records how
            # it ended, and only it tells the listeners.
            ours = run.pid == os.getpid()
            if ours:
                self._record(lambda store: store.finish_run(finished))
            if trace is not None and ours:  # as recorded (the traceback's last lines)
                run = self._reading_store().get_run(run_id) or run
            if error is None and debug:
                logger.debug(
                    "job %r completed in %.3fs",
                    job.id,
                    duration,
                    extra=_log_extra(job.id, run_id, trigger),
                )
            if listeners.entries and ours:
                listeners.emit("completed" if error is None else "failed", run)
            self._unregister_run(me, outer, run_id)
        return "ran", run

    def _unregister_run(self, me: int, outer: Optional[str], run_id: str) -> None:
        with self._idle:
            del self._handles[run_id]
            if outer is None:
                del self._running[me]
            else:
                self._running[me] = outer
            self._idle.notify_all()

    # -- timeouts ----------------------------------------------------------------------------

    def _watch_deadline(self, job: Job, handle: RunHandle, due: float, timeout: float) -> None:
        watcher = self._deadlines
        if watcher is None:
            with self._jobs_lock:
                watcher = self._deadlines
                if watcher is None:
                    watcher = self._deadlines = DeadlineWatcher(self._clock)
        handle.deadline = watcher.add(due, lambda: self._passed_deadline(job, handle, timeout))

    def _passed_deadline(self, job: Job, handle: RunHandle, timeout: float) -> None:
        """``handle``'s run has just passed its timeout: flag it, ask it to stop, say so."""
        run = handle.run
        with self._idle:
            # A deadline thread that fired as the run ended must not flag the job's next run.
            if self._handles.get(run.run_id) is not handle:
                return
            handle.timed_out = True
            job._flag_timed_out()
        handle.cancel()
        logger.warning(
            "job %r (%s): run %s passed its %gs timeout and still runs; "
            "current_run().cancelled is set. bgjobs never kills a thread: the job keeps "
            "its overlap lock until it returns",
            job.id,
            job.name,
            run.run_id,
            timeout,
            extra=_log_extra(job.id, run.run_id, run.trigger),
        )
        if self._listeners.entries:
            self._listeners.emit("timed_out", evolve(run, outcome="timed_out"))

    def _ended_past_deadline(
        self, job: Job, handle: RunHandle, duration: float, timeout: float
    ) -> bool:
        """Whether the run that just ended timed out; flags it now if it did so before the
        deadline thread got to it (a busy machine)."""
        watcher = self._deadlines
        if (
            watcher is not None
            and handle.deadline is not None
            and not watcher.cancel(handle.deadline)
        ):
            return True  # the deadline thread flagged it
        if duration < timeout:
            return False
        self._passed_deadline(job, handle, timeout)
        return True

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, callback: Listener, *, events: Iterable[JobEvent] = ("failed",)) -> None:
        """See :meth:`BackgroundJobManager.add_listener`; bad events raise ``ValueError``."""
        self._listeners.add(callback, events)

    def remove_listener(self, callback: Listener) -> bool:
        """Stop calling ``callback``; ``True`` if it was a listener."""
        return self._listeners.remove(callback)

    def flush_listeners(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds until every event so far reached its listeners."""
        return self._listeners.flush(timeout)

    def _claim_key(self, key: str, run_id: str) -> Optional[str]:
        if not isinstance(key, str) or not key:
            raise ValueError(f"run_key must be a non-empty string, got {key!r}")
        return self._reading_store().claim_key(key, run_id)

    def _release_key(self, key: Optional[str], run_id: str) -> None:
        if key is not None:
            self._reading_store().release_key(key, run_id)

    def trigger_job(self, id: str, *, run_key: Optional[str] = None) -> bool:
        """See :meth:`BackgroundJobManager.trigger_job`. With ``run_key``, the job runs at
        most once per key across every process sharing the state store (kept 24 h): a
        repeated key returns ``True`` without running it again."""
        job = self._job(id)
        if job is None:
            raise JobNotFoundError(id)
        outcome, _ = self._run(job, trigger="manual", run_key=run_key)
        return outcome in ("ran", "duplicate")

    def dispatch(
        self,
        id: str,
        *,
        run_key: Optional[str] = None,
        trigger: RunTrigger = "http",
        background: bool = False,
        scheduled_for: Optional[datetime] = None,
        previous_fire: Optional[datetime] = None,
    ) -> DispatchResult:
        """Run a job for a remote scheduler (HTTP dispatch, ``bgjobs exec``, Trigger.dev).

        Unlike :meth:`trigger_job`, a job stopped in this process, or paused, is not run.
        ``run_key`` (HTTP ``Idempotency-Key``) runs the job at most once per key: a repeat
        answers the run recorded the first time. ``background`` starts the run on a thread
        of its own and returns at once (``accepted``, with the run as it began).
        ``scheduled_for`` is the remote schedule's fire time, kept on the run;
        ``previous_fire`` its fire before that, which is logged and counted as a skip if
        it never reached the app (see :mod:`bgjobs._missed_fires`).
        """
        job = self._job(id)
        if job is None:
            return DispatchResult("not_found", None)
        if scheduled_for is not None or previous_fire is not None:
            self._note_remote_fires(job, scheduled_for, previous_fire)
        if job.stopped:
            return DispatchResult("stopped", self._status(job))
        if self._is_paused(id):
            return DispatchResult("paused", self._status(job))
        outcome, run = self._run(
            job,
            trigger=trigger,
            run_key=run_key,
            background=background,
            scheduled_for=scheduled_for,
        )
        self._refresh(job)
        # A refused run (stopped between the check above and its start) was not run: busy.
        return DispatchResult("busy" if outcome == "refused" else outcome, self._status(job), run)

    def _note_remote_fires(
        self, job: Job, scheduled_for: Optional[datetime], previous_fire: Optional[datetime]
    ) -> None:
        """Mark this fire as arrived; log and count the previous one if it never did."""
        store = self._reading_store()
        if scheduled_for is not None:
            _missed_fires.note_arrival(store, job.id, scheduled_for)
        if previous_fire is None or not _missed_fires.previous_fire_missed(
            store, job.id, previous_fire
        ):
            return
        when = previous_fire.isoformat()
        logger.warning(
            "job %r: its fire at %s never reached the app (down or unreachable for longer "
            "than the dispatcher's retries); counted as a skipped run",
            job.id,
            when,
        )
        self.record_skips(job, 1, reason=f"missed fire at {when}: it never reached the app")

    # -- history and pausing ----------------------------------------------------------------

    def store_health(self) -> Optional[Dict[str, Any]]:
        """Where this manager's state is shared and whether that works right now:
        ``{"path", "degraded", "dropped_writes"}`` (``degraded``: why and what fixes it, or
        ``None``); ``None`` when there is no state store (this process only, in memory)."""
        store = self.store
        if store is None:
            return None
        return {
            "path": store.path,
            "degraded": store.degraded,
            "dropped_writes": store.dropped_writes,
        }

    def _record(self, write: Callable[[StateStore], None]) -> None:
        """Write to the host's store, and to this process's memory when there is none or
        it is degraded (a degraded store counts what it drops; the memory keeps it)."""
        store = self.store
        if store is not None:
            write(store)
        if store is None or store.degraded is not None:
            write(self._memory)

    def _reading_store(self) -> StateStore:
        """The host's store while it is healthy, else this process's memory."""
        store = self.store
        if store is not None and store.degraded is None:
            return store
        return self._memory

    def get_run(self, run_id: str) -> Optional[JobRun]:
        """One run by id (from any process sharing the store), or ``None``."""
        return self._reading_store().get_run(run_id) or self._memory.get_run(run_id)

    def get_job_runs(self, id: str, limit: int = 20) -> List[JobRun]:
        if self._job(id) is None:
            raise JobNotFoundError(id)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
        return self._reading_store().job_runs(id, limit)

    def pause_job(self, id: str) -> None:
        self._set_paused(id, True)

    def resume_job(self, id: str) -> None:
        self._set_paused(id, False)

    def _set_paused(self, id: str, paused: bool) -> None:
        if self._job(id) is None:
            raise JobNotFoundError(id)
        self._memory.set_paused(id, paused)
        if self.store is not None:
            self.store.set_paused(id, paused)
        with self._pause_refresh:  # after a read under way: it may predate the change
            self._paused_seen = (-1e9, set())  # this process sees its own change at once
        logger.info("job %r %s", id, "paused" if paused else "resumed")

    def _is_paused(self, job_id: str, *, after_run: bool = False) -> bool:
        """Whether ``job_id`` is paused, from a set of the store's paused jobs read at most
        every :data:`_PAUSE_REFRESH` seconds. ``after_run``: the caller (a scheduled fire)
        may answer from a set up to twice that old and have it read again after its run,
        not before: a read on the fire's path made one fire a second late by a query."""
        store = self._reading_store()
        if store is self._memory:
            record = store.job(job_id)
            return record is not None and record.paused
        read_at, paused = self._paused_seen
        age = _time.monotonic() - read_at
        if age < _PAUSE_REFRESH:
            return job_id in paused
        if after_run and age < 2 * _PAUSE_REFRESH:
            self._paused_reread = True
            return job_id in paused
        # With no set yet (the first fire, or right after this process paused a job),
        # everyone waits for the read.
        return job_id in self._read_paused(wait=read_at < 0)

    def _read_paused(self, *, wait: bool) -> Set[str]:
        """Read the paused jobs again if no other thread does: the others go on with the
        set it replaces rather than queue behind the writer's transaction for the same
        rows; ``wait`` to wait for a read under way instead."""
        if not self._pause_refresh.acquire(blocking=wait):
            return self._paused_seen[1]
        try:
            read_at, paused = self._paused_seen
            if _time.monotonic() - read_at >= _PAUSE_REFRESH:  # not read while we waited
                paused = self._reading_store().paused_jobs()
                self._paused_seen = (_time.monotonic(), paused)
            self._paused_reread = False
        finally:
            self._pause_refresh.release()
        return paused

    def _housekeeping(self) -> None:
        """Mark runs whose process died ``abandoned`` (at most every few seconds)."""
        store = self.store
        now = _time.monotonic()
        if store is None or now - self._reaped_at < _REAP_INTERVAL:
            return
        self._reaped_at = now
        for run in store.abandon_dead_runs(_pid_alive):
            logger.warning(
                "job %r: run %s in process %d on %s was abandoned: that process died while it ran",
                run.job_id,
                run.run_id,
                run.pid,
                run.host,
                extra=_log_extra(run.job_id, run.run_id, run.trigger),
            )
            if self._listeners.entries:
                self._listeners.emit("abandoned", run)

    def _record_lost_start(self, job: Job, scheduled_for: float, pid: int) -> None:
        """A leader that died took its fire at ``scheduled_for`` (its schedule record says
        so); if the store never heard of that run, record it abandoned. A start is written
        behind: a process killed in the 0.1 s before the writer's next batch took its
        start along."""
        store, host = self.store, _host_name()
        if store is None or _pid_alive(host, pid):
            return
        when = utc_datetime(scheduled_for)
        run = JobRun(
            new_run_id(),
            job.id,
            "schedule",
            when,
            scheduled_for=when,
            finished=utc_datetime(self._clock.time()),
            outcome="abandoned",
            error=f"abandoned: process {pid} on {host} died while the run was in progress",
            pid=pid,
            host=host,
        )
        if store.record_abandoned_fire(run):
            logger.warning(
                "job %r: its fire at %s in process %d was abandoned: that process died as "
                "the run began",
                job.id,
                when.isoformat(),
                pid,
                extra=_log_extra(job.id, run.run_id, run.trigger),
            )
            if self._listeners.entries:
                self._listeners.emit("abandoned", run)

    # -- reading ----------------------------------------------------------------------------

    def _refresh(self, job: Job) -> None:
        """Bring fields derived from the clock (a remote schedule's ``next_run``) up to
        date before a status is read. Never called with a lock held."""

    def _roll_next_run(self, job: Job, cron: CronSchedule, *, fill_unknown: bool) -> None:
        """For runtimes whose timers live elsewhere (Vercel, Trigger.dev): once ``next_run``
        has passed — or is unknown, with ``fill_unknown`` — move it to ``cron``'s next fire
        time. A status read never fails for it; the cron maths runs outside the job's lock."""
        now = utc_datetime(self._clock.time())
        current = job.next_run
        if job.stopped or (current is None and not fill_unknown):
            return
        if current is not None and current > now:
            return
        try:
            upcoming = cron.next_fire(now)
        except Exception:
            return
        job.set_next_run(upcoming, expected=current)

    def _status(
        self,
        job: Job,
        records: Optional[Mapping[str, JobRecord]] = None,
        waiting: Optional[Mapping[str, datetime]] = None,
    ) -> JobStatus:
        """The job's status: this process's view, with the host's counters, last runs and
        pause flag from the store when it has them."""
        local = job.snapshot()
        since = (self._waiting_for_worker() if waiting is None else waiting).get(job.id)
        if since is not None:
            local = evolve(local, waiting_since=since)
        store = self._reading_store()
        record = records.get(job.id) if records is not None else store.job(job.id)
        if record is None:
            return local
        shared = store is not self._memory
        status = local.status
        if status not in ("stopped", "running"):
            if record.paused:
                status = "paused"
            elif shared and record.running_pid is not None:
                status = "running"
            elif shared and record.last_outcome is not None:
                status = "completed" if record.last_outcome == "completed" else "failed"
        if not shared:
            return evolve(local, status=status)
        return evolve(
            local,
            status=status,
            last_run=record.last_run or local.last_run,
            duration=record.last_duration if record.last_duration is not None else local.duration,
            error=record.last_error if status == "failed" else None,
            runs=record.runs,
            failures=record.failures,
            skips=record.skips,
            last_success=record.last_success,
            last_failure=record.last_failure,
            last_error=record.last_error,
            running_pid=record.running_pid,
            timed_out=local.timed_out
            or (status != "running" and record.last_outcome == "timed_out"),
        )

    def get_job_status(self, id: str) -> Optional[JobStatus]:
        job = self._job(id)
        if job is None:
            return None
        self._refresh(job)
        self._housekeeping()
        return self._status(job)

    def get_all_job_statuses(self) -> List[JobStatus]:
        jobs = self._all_jobs()
        for job in jobs:
            self._refresh(job)
        self._housekeeping()
        records = self._reading_store().jobs()
        waiting = self._waiting_for_worker()
        return [self._status(job, records, waiting) for job in jobs]

    def get_job_metrics(self) -> JobMetrics:
        local = self._metrics.snapshot()
        store = self._reading_store()
        if store is self._memory:
            return local
        runs, failures, skips, total = store.totals()
        return JobMetrics(
            total_executions=runs,
            successful_jobs=runs - failures,
            failed_jobs=failures,
            average_job_duration=total / runs if runs else 0.0,
            last_cleanup=local.last_cleanup,
            skipped_executions=skips,
            timed_out_executions=local.timed_out_executions,
            starved_fires=local.starved_fires,
        )

    def __repr__(self) -> str:
        with self._jobs_lock:
            count = len(self._jobs)
        return f"<{type(self).__name__} jobs={count}>"


LISTENER_FLUSH_SECONDS = 1.0
"""How long closing a manager waits for its listeners to receive the last events."""
STORE_FLUSH_SECONDS = 5.0
"""How long closing a manager with a run still going waits for the store's queued records."""
_REAP_INTERVAL = 2.0  # seconds between looks for runs whose process died
_PAUSE_REFRESH = 1.0  # seconds a process may take to see another's pause or resume


def open_state_store(
    settings: Settings, *, checked: bool = False, clock: Optional[Clock] = None
) -> StateStore:
    """The store in the settings' state directory, after the directory's safety checks
    (``checked``: the caller has made them, e.g. by opening it as its lock directory), on the
    manager's ``clock`` (history ages are counted on the clock its runs are recorded by)."""
    from datetime import timedelta

    path = settings.lock_dir
    assert path is not None
    if not checked:
        from ._local.hostlock import LockDirectory  # the same rules as the lock files'

        LockDirectory(path)  # raises UnsafeLockDirError for a directory others could touch
    return open_store(
        path,
        keep_runs=settings.history_runs,
        max_age=timedelta(days=settings.history_days),
        clock=clock,
        write_behind=True,  # the timers' runs are recorded in batches by a writer thread
    )


# -- process-wide hooks: the live managers, exit and fork -------------------------------
# The one place bgjobs reacts to interpreter exit and os.fork() for managers; each manager's
# own override chain (_stop_for_good, _reinit_after_fork, _after_fork_in_parent) does the rest.

# Guards _live_managers, _hooks_installed and _exiting. Rebuilt in a forked child.
_registry_lock = threading.Lock()
_live_managers: weakref.WeakSet[BaseJobManager] = weakref.WeakSet()
_hooks_installed = False
_exiting = False


def _track(manager: BaseJobManager) -> None:
    global _hooks_installed
    with _registry_lock:
        _live_managers.add(manager)
        if _hooks_installed:
            return
        _hooks_installed = True
    # threading._register_atexit (3.9+) runs at the start of interpreter shutdown, before
    # non-daemon threads are joined: scheduling stops at once instead of after whatever
    # else the program waits for (concurrent.futures uses it for the same reason). Plain
    # atexit as well, for hosts that run atexit functions without threading's shutdown
    # (embedded interpreters such as uWSGI); _exit_hook runs once whichever comes first.
    register_early = getattr(threading, "_register_atexit", None)
    if register_early is not None:
        with contextlib.suppress(RuntimeError):  # raised when already shutting down
            register_early(_exit_hook)
    atexit.register(_exit_hook)
    if hasattr(os, "register_at_fork"):  # not on Windows
        os.register_at_fork(
            after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
        )


def _managers() -> List[BaseJobManager]:
    with _registry_lock:
        return list(_live_managers)


def _exit_hook() -> None:
    """Interpreter exit: stop every manager's schedules, give running jobs their timeout."""
    global _exiting
    with _registry_lock:
        if _exiting:
            return
        _exiting = True
        # A manager already shut down had its wait, or is having it.
        managers = [m for m in _live_managers if not m._closed]
    started = _time.monotonic()
    for manager in managers:
        try:
            manager._stop_for_good()
        except Exception:
            logger.exception("bgjobs: stopping %r at exit failed", manager)
    for manager in managers:
        timeout = manager.settings.shutdown_timeout
        remaining = timeout - (_time.monotonic() - started)
        running = manager.running_job_ids()
        if running:
            logger.info(
                "bgjobs: waiting up to %.3gs for running job(s) %s before exit",
                max(0.0, remaining),
                ", ".join(repr(job_id) for job_id in running),
            )
        try:
            manager._await_runs(remaining)
            manager._deliver_last_events()
        except Exception:
            logger.exception("bgjobs: waiting for %r at exit failed", manager)


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for manager in list(_live_managers):
        try:
            manager._reinit_after_fork()
        except Exception:
            logger.exception("bgjobs: rebuilding %r after fork failed", manager)


def _after_fork_in_parent() -> None:
    managers = [
        m
        for m in _managers()
        if type(m)._after_fork_in_parent is not BaseJobManager._after_fork_in_parent
    ]
    if not managers:
        return

    # On a thread of its own: a hand-over takes the managers' locks, and a fork hook
    # must not wait for a lock that another thread may hold.
    def hand_over() -> None:
        for manager in managers:
            try:
                manager._after_fork_in_parent()
            except Exception:
                logger.exception("bgjobs: handing %r over to a forked child failed", manager)

    threading.Thread(target=hand_over, name="bgjobs-fork-handover", daemon=True).start()
