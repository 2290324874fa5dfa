"""The execution core: run a job once, and the job table every manager shares.

Every way a job can start — a timer tick, :meth:`~ManagedJobs.trigger_job`, an HTTP
dispatch from Vercel or Trigger.dev, ``bgjobs exec`` — goes through
:meth:`ManagedJobs.run`. It takes the job's overlap lock without blocking (a busy job is
skipped and counted, never queued), records status and metrics, turns an exception into
a ``failed`` status plus an ERROR log with the traceback, and runs ``async def`` jobs on
an event loop of their own. Managers differ only in *what starts a run*: they implement
:meth:`ManagedJobs._start` and :meth:`ManagedJobs._cancel`.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from datetime import datetime, timezone
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Tuple,
)

from .errors import JobNotFoundError
from .metrics import MetricsAggregator
from .schedules import (
    Clock,
    CronSchedule,
    IntervalSchedule,
    Schedule,
    SystemClock,
    parse_cron,
    parse_interval,
    resolve_timezone,
)
from .types import (
    BackgroundJobManager,
    Interval,
    JobFunc,
    JobMetrics,
    JobStatus,
    JobStatusType,
    TimezoneArg,
)

__all__ = ["DispatchOutcome", "Job", "ManagedJobs", "call_job", "validate_job"]

logger = logging.getLogger(__name__)

DispatchOutcome = Literal["ran", "busy", "stopped", "not_found"]
"""What a dispatch did: ran the job, found it running, found it stopped, or no such job."""

RunContext = Callable[[], ContextManager[Any]]
"""A factory for a context every run happens inside, e.g. Flask's ``app.app_context``."""


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def validate_job(job_id: object, name: object, job: object) -> None:
    """Fail fast on arguments no manager can schedule, naming the job and the bad value."""
    if not isinstance(job_id, str) or not job_id.strip():
        raise ValueError(f"job id must be a non-empty string, got {job_id!r}")
    if job_id != job_id.strip() or "/" in job_id or any(ch.isspace() for ch in job_id):
        raise ValueError(
            f"job id {job_id!r} may not contain '/' or whitespace: it appears in URLs, "
            "lock file names and Trigger.dev keys (use e.g. 'repository-sync')"
        )
    if not isinstance(name, str):
        raise TypeError(f"job {job_id!r}: name must be a string, got {name!r}")
    if not callable(job):
        raise TypeError(f"job {job_id!r}: job must be callable, got {job!r}")


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

    thread = threading.Thread(target=_worker, name="bgjobs-async", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


class Job:
    """One job: its definition and its live state.

    The definition (``id``, ``name``, ``func``, ``schedule``) never changes; replacing a
    job makes a new :class:`Job` that inherits the old one's ``run_lock``, so the old and
    new schedules can never run the job twice at once.
    """

    def __init__(
        self,
        job_id: str,
        name: str,
        func: JobFunc,
        schedule: Optional[Schedule],
        *,
        run_lock: Optional[threading.Lock] = None,
    ) -> None:
        self.id = job_id
        self.name = name
        self.func = func
        self.schedule = schedule
        # Held for the whole of a run, acquired without blocking: the overlap guard.
        self.run_lock = run_lock or threading.Lock()
        # Guards every mutable field below; never held across a job call.
        self.state_lock = threading.Lock()
        self.status: JobStatusType = "scheduled"
        self.stopped = False
        self.last_run: Optional[datetime] = None
        self.next_run: Optional[datetime] = None
        self.duration = 0.0
        self.error: Optional[str] = None
        self.runs = 0
        self.failures = 0
        self.skips = 0
        self.runner: Optional[str] = None
        self.sync_error: Optional[str] = None
        #: Manager-specific handle for what triggers runs (a Timer, a registration...).
        self.handle: Any = None

    @property
    def description(self) -> str:
        return self.schedule.description if self.schedule is not None else "manual"

    def snapshot(self) -> JobStatus:
        with self.state_lock:
            return JobStatus(
                id=self.id,
                name=self.name,
                status=self.status,
                last_run=self.last_run,
                next_run=self.next_run,
                duration=self.duration,
                error=self.error if self.status == "failed" else None,
                schedule=self.description,
                runs=self.runs,
                failures=self.failures,
                skips=self.skips,
                runner=self.runner,
                last_sync_error=self.sync_error,
            )

    def __repr__(self) -> str:
        return f"<Job {self.id!r} {self.description} {self.status}>"


class ManagedJobs(BackgroundJobManager):
    """A :class:`BackgroundJobManager` with the job table and the execution core built in.

    Subclasses say what starts runs by implementing :meth:`_start` (called under the
    table lock when a job is installed) and :meth:`_cancel` (when it is stopped or
    replaced); they may veto a schedule in :meth:`_check_schedule`.
    """

    def __init__(
        self,
        *,
        clock: Optional[Clock] = None,
        env: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._env = env
        # Guards _jobs (id -> Job, in scheduling order). Never held across a job call.
        self._jobs_lock = threading.RLock()
        self._jobs: Dict[str, Job] = {}
        clock = self._clock  # not self: a lambda holding self would make a reference cycle
        self._metrics = MetricsAggregator(lambda: _utc(clock.time()))
        # Guards _running (thread ident -> job id of the run on that thread); notified
        # whenever a run ends so stop_all_jobs(wait=True) can wake up.
        self._idle = threading.Condition(threading.Lock())
        self._running: Dict[int, str] = {}
        self._waiting: Dict[int, int] = {}  # thread ident -> nested wait_idle() calls
        self._run_context: Optional[RunContext] = None
        _live_managers.add(self)

    def _reinit_after_fork(self) -> None:
        """In a forked child, replace every lock: a thread that no longer exists may have
        held one at fork time. Runs of the forking thread continue, so their run locks are
        taken again. Subclasses extend this to re-arm what triggers their runs."""
        me = threading.get_ident()
        self._jobs_lock = threading.RLock()
        self._idle = threading.Condition(threading.Lock())
        self._running = {ident: job_id for ident, job_id in self._running.items() if ident == me}
        self._waiting = {}
        self._metrics.reinit_after_fork()
        continuing = set(self._running.values())
        for job in self._jobs.values():
            job.state_lock = threading.Lock()
            job.run_lock = threading.Lock()
            if job.id in continuing:
                job.run_lock.acquire()

    # -- hooks for subclasses ---------------------------------------------------------

    def _start(self, job: Job) -> None:
        """Begin triggering runs of a freshly installed job. Called with the table lock held."""

    def _cancel(self, job: Job) -> None:
        """Stop triggering runs of ``job`` (stopped or replaced). Must not block on a run."""

    def _check_schedule(self, job_id: str, schedule: Schedule) -> None:
        """Raise :class:`~bgjobs.errors.InvalidScheduleError` if this runtime cannot run it."""

    def _try_claim(self, job: Job) -> bool:
        """Claim the run beyond this process (e.g. a host-wide lock). ``False`` = busy."""
        return True

    def _release_claim(self, job: Job) -> None:
        """Release what :meth:`_try_claim` took."""

    # -- configuration ----------------------------------------------------------------

    def set_run_context(self, factory: Optional[RunContext]) -> None:
        """Run every job inside ``factory()`` (e.g. ``app.app_context``); ``None`` to clear."""
        self._run_context = factory

    # -- scheduling ---------------------------------------------------------------------

    def schedule_job(self, id: str, name: str, job: JobFunc, interval: Interval) -> None:
        validate_job(id, name, job)
        self._install(Job(id, name, job, IntervalSchedule(parse_interval(id, interval))))

    def schedule_cron_job(
        self,
        id: str,
        name: str,
        job: JobFunc,
        cron_expression: str,
        *,
        timezone: TimezoneArg = None,
    ) -> None:
        validate_job(id, name, job)
        tz = resolve_timezone(id, timezone, self._env)
        self._install(Job(id, name, job, parse_cron(id, cron_expression, tz)))

    def _install(self, job: Job) -> None:
        if job.schedule is not None:
            self._check_schedule(job.id, job.schedule)
        with self._jobs_lock:
            old = self._jobs.get(job.id)
            if old is not None:
                with old.state_lock:
                    old_state = (old.stopped, old.status, old.next_run)
                job.run_lock = old.run_lock
                self._mark_stopped(old)
                self._cancel(old)
            self._jobs[job.id] = job
            try:
                self._start(job)
            except BaseException:
                # Nothing half-registered: put back what was there, running as before.
                if old is None:
                    del self._jobs[job.id]
                else:
                    self._jobs[job.id] = old
                    with old.state_lock:
                        old.stopped, old.status, old.next_run = old_state
                    if not old.stopped:
                        self._start(old)
                raise
        logger.debug("scheduled job %r (%s): %s", job.id, job.name, job.description)

    def _job(self, job_id: str) -> Optional[Job]:
        with self._jobs_lock:
            return self._jobs.get(job_id)

    def _all_jobs(self) -> List[Job]:
        with self._jobs_lock:
            return list(self._jobs.values())

    # -- stopping -----------------------------------------------------------------------

    @staticmethod
    def _mark_stopped(job: Job) -> None:
        with job.state_lock:
            job.stopped = True
            job.status = "stopped"
            job.next_run = None

    def stop_job(self, id: str) -> None:
        job = self._job(id)
        if job is None:
            return
        self._mark_stopped(job)
        self._cancel(job)

    def stop_all_jobs(self, *, wait: bool = False, timeout: Optional[float] = None) -> None:
        for job in self._all_jobs():
            self._mark_stopped(job)
            self._cancel(job)
        if wait:
            self.wait_idle(timeout)

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

    def run(self, job: Job) -> bool:
        """Run ``job`` once in the calling thread unless it is already running.

        Returns ``False`` (and counts a skip) when the job is busy; otherwise runs it,
        records the outcome and returns ``True``. A job's exception is logged at ERROR
        with its traceback and never propagates.
        """
        return self._run(job, scheduled=False)

    def run_scheduled(self, job: Job) -> bool:
        """Like :meth:`run`, for a run the schedule started (a timer tick).

        The run does not start (``False``, not counted as a skip) if the job was stopped
        or replaced; that check and the switch to ``running`` happen under the job's state
        lock, so once :meth:`stop_job` has returned no scheduled run of the job can begin.
        """
        return self._run(job, scheduled=True)

    def _run(self, job: Job, *, scheduled: bool) -> bool:
        if not job.run_lock.acquire(blocking=False):
            self._skip(job)
            return False
        try:
            if not self._try_claim(job):
                self._skip(job)
                return False
            try:
                return self._run_claimed(job, scheduled=scheduled)
            finally:
                self._release_claim(job)
        finally:
            job.run_lock.release()

    def _skip(self, job: Job) -> None:
        with job.state_lock:
            job.skips += 1
        self._metrics.record_skip()
        logger.info(
            "job %r is still running, so this run was skipped (bgjobs never runs a job "
            "twice at once)",
            job.id,
        )

    def _run_claimed(self, job: Job, *, scheduled: bool = False) -> bool:
        me = threading.get_ident()
        # Registered before the stopped check, so stop_all_jobs(wait=True) either
        # prevents this run or waits for it.
        with self._idle:
            # A job may trigger another job on its own thread: remember the outer run.
            outer = self._running.get(me)
            self._running[me] = job.id
        started = self._clock.monotonic()
        with job.state_lock:
            refused = scheduled and job.stopped
            if not refused:
                job.status = "running"
                job.last_run = _utc(self._clock.time())
        if refused:
            self._unregister_run(me, outer)
            return False
        error: Optional[str] = None
        try:
            logger.debug("job %r (%s) started", job.id, job.name)
            if self._run_context is None:
                call_job(job.func)
            else:
                with self._run_context():
                    call_job(job.func)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.error(
                "job %r (%s) failed after %.3fs: %s",
                job.id,
                job.name,
                self._clock.monotonic() - started,
                error,
                exc_info=True,
            )
        except BaseException as exc:  # SystemExit/KeyboardInterrupt: record, then let go
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            duration = self._clock.monotonic() - started
            self._finish(job, duration, error)
            self._unregister_run(me, outer)
        return True

    def _unregister_run(self, me: int, outer: Optional[str]) -> None:
        with self._idle:
            if outer is None:
                del self._running[me]
            else:
                self._running[me] = outer
            self._idle.notify_all()

    def _finish(self, job: Job, duration: float, error: Optional[str]) -> None:
        with job.state_lock:
            job.duration = duration
            job.runs += 1
            if error is not None:
                job.failures += 1
            if job.stopped:
                job.status = "stopped"
            else:
                job.status = "completed" if error is None else "failed"
            job.error = error
        self._metrics.record_run(duration, succeeded=error is None)
        if error is None:
            logger.debug("job %r completed in %.3fs", job.id, duration)

    def trigger_job(self, id: str) -> bool:
        job = self._job(id)
        if job is None:
            raise JobNotFoundError(id)
        return self.run(job)

    def dispatch(self, id: str) -> Tuple[DispatchOutcome, Optional[JobStatus]]:
        """Run a job for a remote scheduler (HTTP dispatch, ``bgjobs exec``).

        Unlike :meth:`trigger_job`, a job stopped in this process is not run.
        Returns the outcome and the job's status afterwards (``None`` if not found).
        """
        job = self._job(id)
        if job is None:
            return "not_found", None
        with job.state_lock:
            stopped = job.stopped
        if stopped:
            return "stopped", job.snapshot()
        ran = self.run(job)
        return ("ran" if ran else "busy"), job.snapshot()

    # -- reading ----------------------------------------------------------------------------

    def _refresh(self, job: Job) -> None:
        """Bring fields derived from the clock (a remote schedule's ``next_run``) up to
        date before a status is read. Never called with a lock held."""

    def _roll_next_run(
        self, job: Job, cron: Callable[[], CronSchedule], *, fill_unknown: bool
    ) -> None:
        """For runtimes whose timers live elsewhere (Vercel, Trigger.dev): once ``next_run``
        has passed — or is unknown, with ``fill_unknown`` — move it to ``cron()``'s next fire
        time. A status read never fails for it; croniter runs outside the state lock."""
        now = _utc(self._clock.time())
        with job.state_lock:
            current = job.next_run
            if job.stopped or (current is None and not fill_unknown):
                return
            if current is not None and current > now:
                return
        try:
            upcoming = cron().next_fire(now)
        except Exception:
            return
        with job.state_lock:
            if job.next_run == current and not job.stopped:
                job.next_run = upcoming

    def get_job_status(self, id: str) -> Optional[JobStatus]:
        job = self._job(id)
        if job is None:
            return None
        self._refresh(job)
        return job.snapshot()

    def get_all_job_statuses(self) -> List[JobStatus]:
        jobs = self._all_jobs()
        for job in jobs:
            self._refresh(job)
        return [job.snapshot() for job in jobs]

    def get_job_metrics(self) -> JobMetrics:
        return self._metrics.snapshot()

    def __repr__(self) -> str:
        with self._jobs_lock:
            count = len(self._jobs)
        return f"<{type(self).__name__} jobs={count}>"


# Every manager alive in this process, held weakly, for the fork hook below.
_live_managers: weakref.WeakSet[ManagedJobs] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for manager in list(_live_managers):
        manager._reinit_after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
