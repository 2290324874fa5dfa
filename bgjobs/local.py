"""The local runtime: jobs run in this process, on timers.

Each job has at most one armed timer (a :class:`~bgjobs._local.timers.TimerHandle` on
the manager's :class:`~bgjobs._local.timers.TimerQueue`). When it fires, the tick first arms
the next timer — for the schedule's next due time after the one that just fired, so runs
never drift — and then runs the job through the execution core, on a pool worker thread
named ``bgjobs-<job id>`` for the length of the run. A run that outlasts its interval makes
the following ticks find the job busy: they are skipped and counted, never queued. Every
thread is a daemon, so an idle schedule never keeps the interpreter alive. One waiting
thread and a bounded pool (``max_workers``, ``BGJOBS_MAX_WORKERS``, default 10 runs at
once) serve all of a manager's jobs, so 10,000 jobs cost 10,000 heap entries, not 10,000
threads.

Many processes on one host
--------------------------
Without a state directory every process runs its own schedules: under gunicorn with four
workers, every job runs four times. With one (``state_dir=``, ``BGJOBS_STATE_DIR``; the older
names ``lock_dir=``/``BGJOBS_LOCK_DIR`` too) the processes sharing it run each scheduled fire
once between them, and show the same statuses, history and pause flags: the directory holds
the lock files below and ``state.db``, the state store (:mod:`bgjobs.store`). Where an app
is wired — the factory, the Flask extension, the command line — a per-user, per-app state
directory is used by default (:func:`bgjobs.config.default_state_dir`); a bare
``LocalJobManager()`` stays in memory, so scripts and tests never share state by accident.

* **Each fire once, by construction.** Before a scheduled run starts, its (job id, due
  time) is written to the store under a unique constraint: one process wins, on the whole
  host. The leadership below makes that the rare case, not the common one.

* **Who runs a schedule.** Each job's schedule belongs to one process at a time, its
  *leader*, which holds a kernel lock on ``schedule-<job id>.lock`` and records there its
  pid and the next due time. The others stand by without timers; when the leader dies —
  even by ``SIGKILL`` — another process takes over within about a second. Leadership is
  per job, so processes that schedule different jobs, or two managers in one process,
  still work.
* **Which fire is which.** A new leader continues from the recorded due time: no fire
  runs twice, an interval job keeps the grid of the process that first scheduled it, and
  a fire missed during the hand-over (due at most :data:`CATCH_UP_WINDOW` seconds ago)
  runs at once or is coalesced into the next one.
* **No overlap anywhere.** Every run also holds ``job-<job id>.lock``, so
  :meth:`~LocalJobManager.trigger_job` in any process returns ``False`` while the job runs
  anywhere on the host.
* **Stopping** a job (``stop_job``, ``shutdown``, interpreter exit) releases its schedule,
  so a standby process takes it over: stopping is per process, as for every manager.

The election, the record and the hand-over rules are in
:mod:`bgjobs._local.leadership`; the lock files' safety rules in
:mod:`bgjobs._local.hostlock`.

Fork and exit
-------------
After ``os.fork()`` the child rebuilds every lock of every manager (any of them may have
been held by a thread that does not exist in the child) and re-arms its schedules: timers
on the parent's due times without a lock directory (and one warning per process, since
both processes now run the jobs), standby with one. A process that forks hands its
schedules to its children — that is what makes ``gunicorn --preload`` run jobs in a worker
rather than the arbiter — and takes one back only after finding it unclaimed for
:data:`DEFER_SECONDS`, i.e. when no child runs it.

At interpreter exit (gunicorn workers exit this way on ``SIGTERM``) every live manager
stops scheduling and running jobs get up to ``BGJOBS_SHUTDOWN_TIMEOUT`` seconds (default
10) to finish; any still running after that is logged by name.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._local.hostlock import LockDirectory
from ._local.leadership import (
    CATCH_UP_WINDOW,
    DEFER_SECONDS,
    ELECTION_INTERVAL,
    LATE,
    Coordinator,
    HostCoordinator,
    SoloCoordinator,
)
from ._local.timers import STARVED_AFTER, TimerHandle, TimerQueue
from .config import Settings
from .execution import BaseJobManager, Job, open_state_store
from .schedules import Clock, utc_datetime
from .store import FireClaim, StateStore

__all__ = [
    "CATCH_UP_WINDOW",
    "DEFER_SECONDS",
    "ELECTION_INTERVAL",
    "STARVED_AFTER",
    "STARVED_LOG_INTERVAL",
    "LocalJobManager",
]

logger = logging.getLogger(__name__)

STARVED_LOG_INTERVAL = 60.0
"""Seconds between two warnings that fires wait for a worker, while that lasts (every
such fire is counted all the same)."""


class LocalJobManager(BaseJobManager):
    """Runs jobs in-process on timers, with per-job overlap locks and metrics.

    ``clock`` replaces the time source used for due times (tests); ``settings`` (default:
    read from ``env``, default ``os.environ``) gives ``BGJOBS_TIMEZONE``,
    ``BGJOBS_STATE_DIR``, ``BGJOBS_MAX_WORKERS`` and ``BGJOBS_SHUTDOWN_TIMEOUT``.
    ``state_dir`` (or its older name ``lock_dir``; default ``BGJOBS_STATE_DIR``; ``None``,
    unset and ``""`` mean none: this process alone, in memory) makes all processes sharing
    the directory run each scheduled fire once between them and share one state store —
    see the module documentation. ``max_workers`` (default
    ``BGJOBS_MAX_WORKERS``, else 10, like APScheduler) bounds how many scheduled runs
    happen at once; a fire that finds every worker busy waits for one (a slow job never
    delays the timers), and one that waits :data:`STARVED_AFTER` seconds is logged with
    what occupies the pool, counted, and shown as its job's ``waiting_since`` — the pool
    never grows past ``max_workers``. Raises
    :class:`~bgjobs.errors.UnsafeLockDirError` for a lock directory others could tamper with.
    """

    def __init__(
        self,
        *,
        clock: Optional[Clock] = None,
        env: Optional[Mapping[str, Any]] = None,
        settings: Optional[Settings] = None,
        lock_dir: Union[str, os.PathLike[str], None] = None,
        state_dir: Union[str, os.PathLike[str], None] = None,
        max_workers: Optional[int] = None,
        store: Optional[StateStore] = None,
    ) -> None:
        settings = Settings.coerce(settings, env)
        if max_workers is not None:
            _check_max_workers(max_workers)
            settings = settings.replace(max_workers=max_workers)
        chosen = state_dir if state_dir is not None else lock_dir
        if chosen is not None:
            settings = settings.replace(state_dir=os.fspath(chosen))
        path = settings.lock_dir
        host = LockDirectory(path) if path else None  # checked before the store opens
        opened = store is None and host is not None
        if opened:
            store = open_state_store(settings, checked=True, clock=clock)
        super().__init__(clock=clock, settings=settings, store=store)
        self._owns_store = opened
        self._starved_logged_at = -1e9  # monotonic time the last starvation warning went out
        self._timers = self._timer_queue()
        # Guards _armed: each live job's armed timer. Taken inside a job's if_live().
        self._armed_lock = threading.Lock()
        self._armed: Dict[Job, TimerHandle] = {}
        # Guarded by _armed_lock too: the due time of each id's last disarmed timer.
        self._disarmed: Dict[str, Tuple[Job, float]] = {}
        #: Decides which fires run here: all of them, or those of the jobs this process
        #: leads among the processes sharing the lock directory.
        self._coordinator: Coordinator = (
            SoloCoordinator(self) if host is None else HostCoordinator(self, host)
        )

    @property
    def lock_dir(self) -> Optional[str]:
        """The state directory in use, or ``None`` (every process runs its own schedules)."""
        return self._coordinator.lock_dir

    @property
    def state_dir(self) -> Optional[str]:
        """The state directory in use (lock files and ``state.db``), or ``None``."""
        return self._coordinator.lock_dir

    # -- timers -------------------------------------------------------------------------

    def _timer_queue(self) -> TimerQueue:
        """The queue that fires this manager's timers (the manual clock's manager replaces
        it with one the test drives)."""
        return TimerQueue(
            self._clock, max_workers=self.settings.max_workers, on_starved=self._starved
        )

    # -- a full pool ----------------------------------------------------------------------

    def _starved(
        self,
        starved: List[TimerHandle],
        waiting: List[Tuple[TimerHandle, float]],
        workers: List[int],
    ) -> None:
        """Fires waited :data:`STARVED_AFTER` seconds for a worker: count each, and say
        which jobs wait and which occupy the pool (at most once a minute while it lasts).

        A fire of a job that is running itself is left out: its own run, not the pool,
        keeps it from running (it is skipped once it gets a worker)."""
        jobs = [job for job in map(_job_of, starved) if job and not job.run_lock.locked()]
        if not jobs:
            return
        for job in jobs:
            self.record_starved(job)
        now = self._clock.monotonic()
        if now - self._starved_logged_at < STARVED_LOG_INTERVAL:
            return
        self._starved_logged_at = now
        waits = [
            (job.id, waited)
            for handle, waited in waiting
            for job in (_job_of(handle),)
            if job is not None and not job.run_lock.locked()
        ]
        logger.warning(
            "every worker is busy (max_workers=%d), so %d due fire(s) have waited more than "
            "%gs for one: waiting %s; running %s. The pool does not grow: raise "
            "BGJOBS_MAX_WORKERS (max_workers=), or find why those runs do not end",
            self.settings.max_workers,
            len(waits),
            STARVED_AFTER,
            _list_jobs(waits, "{} ({:.1f}s)"),
            _list_jobs(self._runs_on(workers), "{} (for {:.1f}s{})"),
        )

    def _runs_on(self, threads: List[int]) -> List[Tuple[str, float, str]]:
        """(job id, seconds it has run, ``", past its timeout"`` or ``""``) of the runs
        going on ``threads``, longest first."""
        with self._idle:
            job_ids = [self._running[ident] for ident in threads if ident in self._running]
        now = self._clock.time()
        runs = []
        for job_id in job_ids:
            job = self._job(job_id)
            status = job.snapshot() if job is not None else None
            started = status.last_run if status is not None else None
            late = ", past its timeout" if status is not None and status.timed_out else ""
            runs.append((job_id, now - started.timestamp() if started is not None else 0.0, late))
        return sorted(runs, key=lambda run: -run[1])

    def _waiting_for_worker(self) -> Dict[str, datetime]:
        waiting = self._timers.waiting()
        if not waiting:
            return {}
        offset = self._clock.time() - self._clock.monotonic()
        return {
            job.id: utc_datetime(since + offset)
            for handle, since in waiting
            for job in (_job_of(handle),)
            if job is not None
        }

    def _now(self, job: Job) -> float:
        assert job.schedule is not None
        return self._clock.time() if job.schedule.wall_clock else self._clock.monotonic()

    def _first_due(self, job: Job) -> float:
        """The first due time of ``job``, just scheduled here: one period after the call
        began (an interval is not moved by the lock files and records the call sets up)."""
        assert job.schedule is not None
        called = job.called_at
        if called is None:
            return job.schedule.first_due(self._now(job))
        return job.schedule.first_due(called[1] if job.schedule.wall_clock else called[0])

    def _to_wall(self, job: Job, due: float) -> float:
        assert job.schedule is not None
        if job.schedule.wall_clock:
            return due
        return self._clock.time() + (due - self._clock.monotonic())

    def _from_wall(self, job: Job, wall: float) -> float:
        assert job.schedule is not None
        if job.schedule.wall_clock:
            return wall
        return self._clock.monotonic() + (wall - self._clock.time())

    def _start(self, job: Job) -> None:
        if job.schedule is None:
            return  # unscheduled: it runs when triggered or dispatched, never on a timer
        self._coordinator.start(job)
        with self._armed_lock:
            self._disarmed.pop(job.id, None)  # replaced for good

    def _arm(self, job: Job, due: float) -> None:
        schedule = job.schedule
        assert schedule is not None
        if due == math.inf:  # a one-off job after its fire: nothing more to arm
            job.set_next_run(None)
            return
        fire_at = due
        if job.policy is not None and job.policy.jitter:
            fire_at += job.policy.jitter_offset(job.id, due)
        # The clocks are read once here (the fire's wall time and its key share them).
        offset = 0.0 if schedule.wall_clock else self._clock.time() - self._clock.monotonic()
        next_run = self._fire_key(job, fire_at, offset)
        claim: Optional[FireClaim] = None
        store = self.store
        if store is not None and self._coordinator.claims_ahead:
            # The leader claims the fire now, an interval ahead: the claim is committed
            # with the writer's next batch, and the fire finds it decided. Without jitter
            # the fire's key is its next run (the same rounding of the same sum).
            key = next_run if fire_at == due else self._fire_key(job, due, offset)
            claim = store.claim_fire_ahead(job.id, key)

        def arm() -> None:
            handle = self._timers.call_at(fire_at, schedule.wall_clock, self._tick, job, due, claim)
            with self._armed_lock:
                self._armed[job] = handle

        # Armed inside if_live so a concurrent stop either sees and cancels this timer or
        # makes this call do nothing.
        if job.if_live(arm):
            job.set_next_run(next_run)

    def _fire_key(self, job: Job, due: float, offset: Optional[float] = None) -> datetime:
        """The due time on the wall clock, to the millisecond: every process computes the
        same key for one fire (an interval's monotonic due time converts with jitter, off by
        the microseconds between two clock reads; shown under frozen time). Also a fire's
        shown next run. ``offset``: wall minus monotonic time as the caller already read it."""
        wall = self._to_wall(job, due) if offset is None else due + offset
        return utc_datetime(round(wall, 3))

    def _tick(self, job: Job, due: float, claim: Optional[FireClaim] = None) -> None:
        """A timer fired (on a pool worker): name the thread for the job while it runs."""
        thread = threading.current_thread()
        pool_name, thread.name = thread.name, f"bgjobs-{job.id}"
        try:
            self._fire(job, due, claim)
        except (SystemExit, KeyboardInterrupt) as exc:
            # Recorded as a failed run already. Only the main thread can end the process:
            # in a child the job forked on this worker, it is this one (the pool ends it).
            if thread is threading.main_thread():
                raise
            logger.error(
                "job %r (%s) raised %s on a worker thread; the run is recorded as failed and "
                "the process goes on (only the main thread can end it)",
                job.id,
                job.name,
                _describe_exit(exc),
            )
        finally:
            thread.name = pool_name

    def _call_later(
        self, job: Job, delay: float, callback: Callable[[], None]
    ) -> Optional[Callable[[], None]]:
        """A retry's backoff: a timer on the job's queue (no thread waits for it)."""
        try:
            handle = self._timers.call_at(
                self._clock.monotonic() + delay, False, self._retry_tick, job, callback
            )
        except RuntimeError:  # the queue is shut down: the manager is closing
            return None
        return handle.cancel

    def _retry_tick(self, job: Job, callback: Callable[[], None]) -> None:
        thread = threading.current_thread()
        pool_name, thread.name = thread.name, f"bgjobs-{job.id}"
        try:
            callback()
        finally:
            thread.name = pool_name

    def _disarm(self, job: Job) -> None:
        with self._armed_lock:
            tick = self._armed.pop(job, None)
            if tick is not None:
                # Kept for _restore; one per id, so the table's size bounds it.
                self._disarmed[job.id] = (job, _grid_due(tick))
        if tick is not None:
            tick.cancel()

    def _restore(self, job: Job) -> None:
        with self._armed_lock:
            kept = self._disarmed.pop(job.id, None)
        if kept is None or kept[0] is not job or job.schedule is None:
            self._start(job)
            return
        self._coordinator.restore(job, kept[1])

    def _cancel(self, job: Job) -> None:
        self._disarm(job)
        self._coordinator.cancel(job)

    def _fire(self, job: Job, due: float, claim: Optional[FireClaim] = None) -> None:
        with self._armed_lock:
            handle = self._armed.get(job)  # this fire's timer, until the next one is armed
        scheduled_for = claim.scheduled_for if claim is not None else self._fire_key(job, due)
        # Arms the next tick if this one runs.
        fire = self._coordinator.take_fire(job, due, scheduled_for)
        if fire is None:
            return  # stopped, or another process leads the job now
        missed, reason = fire
        if missed and reason == LATE:
            reason = self._lateness(job, due, handle)
        self._skip_missed(job, missed, reason)
        if job.policy is not None and job.policy.misfire_grace is not None:
            late = self._now(job) - due - job.policy.jitter_offset(job.id, due)
            if late > job.policy.misfire_grace:
                self.record_skips(
                    job,
                    1,
                    f"its fire was {late:.3f}s late, past its misfire_grace of "
                    f"{job.policy.misfire_grace:g}s",
                )
                return
        try:
            self.run_scheduled(job, scheduled_for, claim=claim)
        except Exception:  # a lock-file problem (job errors are handled by the core)
            logger.error("job %r: scheduled run failed to start", job.id, exc_info=True)

    def _lateness(self, job: Job, due: float, handle: Optional[TimerHandle]) -> str:
        """Why a fire came so late that due times passed: which of the two it was."""
        late = self._now(job) - due
        now = self._clock.monotonic()
        mine = handle is not None and _grid_due(handle) == due
        handed_over = handle.handed_over if handle is not None and mine else None
        waited = now - handed_over if handed_over is not None else 0.0
        if waited > late / 2:
            return (
                f"every worker was busy: the fire waited {waited:.3g} s for one "
                f"(max_workers={self.settings.max_workers})"
            )
        return (
            f"its timer came up {late:.3g} s late: this process was paused (SIGSTOP, a "
            "debugger), the machine suspended, or the clock stepped forward"
        )

    def _skip_missed(self, job: Job, count: int, reason: str) -> None:
        """Count ``count`` due times that passed without a run (coalesced), log once."""
        if count > 0:
            self.record_skips(job, count, f"its due time(s) passed: {reason}")

    def _try_claim(self, job: Job) -> bool:
        return self._coordinator.try_claim(job)

    def _release_claim(self, job: Job) -> None:
        self._coordinator.release_claim(job)

    # -- lifecycle --------------------------------------------------------------------------

    def _release(self) -> None:
        self._coordinator.release()
        self._timers.shutdown()

    # -- fork -------------------------------------------------------------------------------

    def _after_fork_in_parent(self) -> None:
        """Hand every schedule this process leads to its children (they take them over)."""
        self._coordinator.after_fork_in_parent()

    def _reinit_after_fork(self) -> None:
        """Rebuild every lock and re-arm the schedules (or stand by for them).

        Only the thread that called ``fork()`` exists here; any lock may have been held by
        one that does not. Runs that thread was in continue, so their run locks stay held.
        """
        super()._reinit_after_fork()
        self._timers.reinit_after_fork()
        armed, self._armed = self._armed, {}
        self._disarmed = {}
        self._armed_lock = threading.Lock()
        live = [
            job
            for job in self._jobs.values()
            if not (job.stopped or self._closed or job.schedule is None)
        ]
        self._coordinator.reinit_after_fork(
            live, {job: _grid_due(tick) for job, tick in armed.items()}
        )


def _job_of(handle: TimerHandle) -> Optional[Job]:
    """The job a timer is the tick of (``(job, due)``); ``None`` for another timer."""
    job = handle.args[0] if handle.args else None
    return job if isinstance(job, Job) else None


def _list_jobs(entries: Sequence[Tuple[Any, ...]], form: str, most: int = 10) -> str:
    """``'a' (1.2s), 'b' (0.4s) and 3 more``, or ``none``: each entry is a job id and the
    rest of ``form``'s fields."""
    if not entries:
        return "none"
    shown = ", ".join(form.format(repr(job_id), *rest) for job_id, *rest in entries[:most])
    more = len(entries) - most
    return f"{shown} and {more} more" if more > 0 else shown


def _describe_exit(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r})"
    return type(exc).__name__


def _grid_due(tick: TimerHandle) -> float:
    """The schedule's due time a tick stands for (its own ``due`` may carry jitter): the
    ``due`` argument :meth:`LocalJobManager._arm` gave it."""
    due: float = tick.args[1]
    return due


def _check_max_workers(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_workers must be a whole number >= 1, got {value!r}")
