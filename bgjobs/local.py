"""The local runtime: jobs run in this process, on timers.

Each job has at most one armed timer (a :class:`~bgjobs._local.timers.TimerHandle` on
the manager's :class:`~bgjobs._local.timers.TimerQueue`). When it fires, the tick first arms
the next timer — for the schedule's next due time after the one that just fired, so runs never
drift — and then runs the job through the execution core, on a pool worker thread named
``bgjobs-<job id>`` for the length of the run. A run that outlasts its interval makes the
following ticks find the job busy: they are skipped and counted, never queued. Every
thread is a daemon, so an idle schedule never keeps the interpreter alive. One waiting
thread and a bounded pool (``max_workers``, ``BGJOBS_MAX_WORKERS``, default 10 runs at
once) serve all of a manager's jobs, so 10,000 jobs cost 10,000 heap entries, not 10,000
threads.

Many processes on one host
--------------------------
Without a lock directory every process runs its own schedules: under gunicorn with four
workers, every job runs four times. With one (``lock_dir=`` or ``BGJOBS_LOCK_DIR``; see
:mod:`bgjobs._local.hostlock`), the processes sharing it run each scheduled fire once
between them:

* **Who runs a schedule.** Each job's schedule belongs to the process holding the kernel
  lock on ``schedule-<job id>.lock``, taken when the job is scheduled. That process (the
  job's *leader*) arms the timers and writes its pid and the next due time into the file.
  The others stand by without timers; a daemon thread (``bgjobs-election``) retries the
  lock every second, so when the leader dies — even by ``SIGKILL``, the kernel drops its
  locks — another process takes over within about a second. Leadership is per job, so
  processes that schedule different jobs, or two managers in one process, still work.
* **Which fire is which.** The due time recorded in the file is the first fire not yet
  taken; the leader advances it *before* running a fire. A new leader continues from it:
  a pending fire runs at its time; a fire missed during the hand-over (due at most
  :data:`CATCH_UP_WINDOW` seconds ago) runs at once — unless the next one is less than
  half a period away, then it is coalesced into that one — and earlier misses are skipped
  like ticks coalesced after an overrun. So an interval job keeps the grid of the process
  that first scheduled it, and no fire runs twice. An older record (nobody ran the
  schedule for a while, or its schedule changed) starts afresh: the first run one interval
  after the take-over, or the cron's next time.
* **No overlap anywhere.** Every run also holds ``job-<job id>.lock`` (taken after the
  in-process run lock), so :meth:`~LocalJobManager.trigger_job` in any process returns
  ``False`` while the job runs anywhere on the host.
* **Stopping** a job (``stop_job``, ``shutdown``, interpreter exit) releases its schedule,
  so a standby process takes it over: stopping is per process, as for every manager.

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
import time
import weakref
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Union

from ._local import hostlock
from ._local.hostlock import HostLock, LockDirectory, lock_file_name
from ._local.timers import TimerHandle, TimerQueue
from .config import Settings
from .execution import BaseJobManager, Job
from .schedules import Clock

__all__ = ["CATCH_UP_WINDOW", "DEFER_SECONDS", "ELECTION_INTERVAL", "LocalJobManager"]

logger = logging.getLogger(__name__)

ELECTION_INTERVAL = 1.0
"""Seconds between a standby process's attempts to take over a schedule."""

DEFER_SECONDS = 1.5
"""A process that has forked takes a schedule only after finding it unclaimed this long."""

CATCH_UP_WINDOW = 30.0
"""A new leader runs a fire the previous one missed only if it was due this recently."""

_OVERRUN = "they passed while the job was still running (or its timer was late)"
_HANDOVER = "they passed while no process ran its schedule (coalesced into one run)"
_AFTER_FORK_RETRIES = (0.05, 0.2)  # a fresh child tries again soon: its parent is resigning


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


class _Slot:
    """One job id's host-wide coordination in one manager (only with a lock directory)."""

    def __init__(self, directory: LockDirectory, job_id: str) -> None:
        # Guards every field below. A tick records its fire and arms the next one under
        # it, and leadership is given up under it, so no fire is recorded by a process
        # that no longer leads. Taken after the table lock, before a job's state lock.
        self.lock = threading.Lock()
        #: Held by the process that runs this job's schedule; carries its record.
        self.schedule_lock: HostLock = directory.lock(lock_file_name("schedule", job_id))
        #: Held for the length of every run, by whichever process runs it.
        self.run_claim: HostLock = directory.lock(lock_file_name("job", job_id))
        self.job: Optional[Job] = None  # the Job whose schedule this slot serves
        self.leading = False
        self.free_since: Optional[float] = None  # a deferring process's first free probe
        self.problem: Optional[str] = None  # last election error logged (logged once)
        self.catching_up = False  # the armed tick runs a fire missed during a hand-over


class LocalJobManager(BaseJobManager):
    """Runs jobs in-process on timers, with per-job overlap locks and metrics.

    ``clock`` replaces the time source used for due times (tests); ``settings`` (default:
    read from ``env``, default ``os.environ``) gives ``BGJOBS_TIMEZONE``,
    ``BGJOBS_LOCK_DIR``, ``BGJOBS_MAX_WORKERS`` and ``BGJOBS_SHUTDOWN_TIMEOUT``.
    ``lock_dir`` (default ``BGJOBS_LOCK_DIR``; ``None`` and unset mean no coordination)
    makes all processes sharing the directory run each scheduled
    fire once between them — see the module documentation. ``max_workers`` (default
    ``BGJOBS_MAX_WORKERS``, else 10, like APScheduler) bounds how many scheduled runs
    happen at once; a fire that finds every worker busy waits for one (a slow job never
    delays the timers). Raises
    :class:`~bgjobs.errors.UnsafeLockDirError` for a lock directory others could tamper with.
    """

    def __init__(
        self,
        *,
        clock: Optional[Clock] = None,
        env: Optional[Mapping[str, Any]] = None,
        settings: Optional[Settings] = None,
        lock_dir: Union[str, os.PathLike[str], None] = None,
        max_workers: Optional[int] = None,
    ) -> None:
        super().__init__(clock=clock, settings=settings, env=env)
        if max_workers is not None:
            _check_max_workers(max_workers)
            self.settings = self.settings.replace(max_workers=max_workers)
        if lock_dir is not None:
            self.settings = self.settings.replace(lock_dir=os.fspath(lock_dir))
        self._timers = TimerQueue(self._clock, max_workers=self.settings.max_workers)
        path = self.settings.lock_dir
        self._host: Optional[LockDirectory] = LockDirectory(path) if path else None
        # Guards _armed: each live job's armed timer. Taken inside a job's if_live().
        self._armed_lock = threading.Lock()
        self._armed: Dict[Job, TimerHandle] = {}
        # _slots (job id -> _Slot) and _deferring are guarded by the table lock
        # (_jobs_lock). Slots are never removed, so a lookup alone needs no lock.
        self._slots: Dict[str, _Slot] = {}
        self._deferring = False  # this process forked: leave schedules to its children
        self._elector: Optional[threading.Thread] = None
        self._elector_wake = threading.Event()
        self._token = _new_token()  # tells this manager's records from others'

    @property
    def lock_dir(self) -> Optional[str]:
        """The lock directory in use, or ``None`` (every process runs its own schedules)."""
        return self._host.path if self._host is not None else None

    # -- timers -------------------------------------------------------------------------

    def _now(self, job: Job) -> float:
        assert job.schedule is not None
        return self._clock.time() if job.schedule.wall_clock else self._clock.monotonic()

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

    def _slot(self, job_id: str) -> Optional[_Slot]:
        """``job_id``'s host-wide coordination (created on first use); ``None`` without a
        lock directory."""
        if self._host is None:
            return None
        slot = self._slots.get(job_id)
        if slot is None:
            with self._jobs_lock:
                slot = self._slots.get(job_id)
                if slot is None:
                    slot = self._slots[job_id] = _Slot(self._host, job_id)
        return slot

    def _start(self, job: Job) -> None:
        if job.schedule is None:
            return  # unscheduled: it runs when triggered or dispatched, never on a timer
        slot = self._slot(job.id)
        if slot is None:
            self._arm(job, job.schedule.first_due(self._now(job)))
            return
        with slot.lock:
            # Open both lock files now: a planted symbolic link fails schedule_job.
            slot.run_claim.open()
            slot.schedule_lock.open()
            slot.free_since = None
            slot.problem = None
            slot.job = job
            try:
                if not self._deferring and slot.schedule_lock.try_acquire():
                    self._lead(job, slot, installing=True)
                else:
                    self._show_standby(job, slot)
            except BaseException:
                slot.job = None  # the table keeps its previous job; leave no trace here
                self._resign(slot)
                raise
        self._ensure_elector()

    def _arm(self, job: Job, due: float) -> None:
        schedule = job.schedule
        assert schedule is not None
        wall = self._to_wall(job, due)

        def arm() -> None:
            handle = self._timers.call_at(due, schedule.wall_clock, self._tick, job, due)
            with self._armed_lock:
                self._armed[job] = handle

        # Armed inside if_live so a concurrent stop either sees and cancels this timer or
        # makes this call do nothing.
        if job.if_live(arm):
            job.set_next_run(_utc(wall))

    def _tick(self, job: Job, due: float) -> None:
        """A timer fired (on a pool worker): name the thread for the job while it runs."""
        thread = threading.current_thread()
        pool_name, thread.name = thread.name, f"bgjobs-{job.id}"
        try:
            self._fire(job, due)
        finally:
            thread.name = pool_name

    def _disarm(self, job: Job) -> None:
        with self._armed_lock:
            tick = self._armed.pop(job, None)
        if tick is not None:
            tick.cancel()

    def _cancel(self, job: Job) -> None:
        self._disarm(job)
        slot = self._slots.get(job.id)
        if slot is not None:
            with slot.lock:
                if slot.job is job:
                    slot.job = None
                    self._resign(slot)
                    job.set_runner(None)

    def _fire(self, job: Job, due: float) -> None:
        assert job.schedule is not None
        slot = self._slots.get(job.id)
        if slot is None:
            if job.stopped:
                return
            nxt, missed = job.schedule.next_due(due, self._now(job))
            self._arm(job, nxt)
            reason = _OVERRUN
        else:
            with slot.lock:
                if slot.job is not job or not slot.leading:
                    return  # resigned (stopped, replaced, forked) since this tick was armed
                if job.stopped:
                    return
                nxt, missed = job.schedule.next_due(due, self._now(job))
                # Record first: a successor starts after this fire, so it never runs twice.
                self._write_record(job, slot, nxt)
                self._arm(job, nxt)
                reason, slot.catching_up = (_HANDOVER if slot.catching_up else _OVERRUN), False
        self._skip_missed(job, missed, reason)
        try:
            self.run_scheduled(job)
        except Exception:  # a lock-file problem (job errors are handled by the core)
            logger.error("job %r: scheduled run failed to start", job.id, exc_info=True)

    # -- host-wide coordination -------------------------------------------------------------

    def _try_claim(self, job: Job) -> bool:
        slot = self._slot(job.id)
        return True if slot is None else slot.run_claim.try_acquire()

    def _release_claim(self, job: Job) -> None:
        slot = self._slots.get(job.id)
        if slot is not None:
            slot.run_claim.release()

    def _lead(self, job: Job, slot: _Slot, *, installing: bool = False) -> None:
        """Run ``job``'s schedule here, from where the previous leader left it.

        Called with ``slot.lock`` held and the schedule lock just acquired; ``installing``
        when ``job`` was just scheduled here (rather than taken over).
        """
        assert job.schedule is not None
        slot.leading = True
        slot.free_since = None
        due = self._resume_due(job, slot, installing=installing)
        self._write_record(job, slot, due)
        job.set_runner(f"this process (pid {os.getpid()})")
        self._arm(job, due)
        logger.info(
            "this process (pid %d) now runs the schedule of job %r; next run %s",
            os.getpid(),
            job.id,
            _utc(self._to_wall(job, due)).isoformat(),
        )

    def _resume_due(self, job: Job, slot: _Slot, *, installing: bool) -> float:
        """The first due time a new leader arms (see "Which fire is which" above)."""
        schedule = job.schedule
        assert schedule is not None
        record = self._read_record(slot)
        now = self._now(job)
        fresh = schedule.first_due(now)
        if record is None or record.get("schedule") != schedule.description:
            return fresh
        if installing and record.get("manager") == self._token:
            return fresh  # this manager replaced its own job: a new schedule, as always
        recorded = record.get("next")
        if not isinstance(recorded, (int, float)) or not math.isfinite(recorded):
            return fresh
        due = self._from_wall(job, float(recorded))
        if now < due <= fresh + 1e-6:
            return due  # the pending fire, on the previous leader's grid
        if now - CATCH_UP_WINDOW <= due <= now:
            # Missed during the hand-over: run it now — unless the fire after it is less
            # than half a period away; then coalesce it into that one.
            following, _ = schedule.next_due(due, due)
            upcoming, missed = schedule.next_due(due, now)
            if upcoming - now < (following - due) / 2:
                self._skip_missed(job, missed + 1, _HANDOVER)
                return upcoming
            slot.catching_up = True
            return due
        return fresh

    def _skip_missed(self, job: Job, count: int, reason: str) -> None:
        """Count ``count`` due times that passed without a run (coalesced), log once."""
        if count > 0:
            self.record_skips(job, count, f"its due time(s) passed: {reason}")

    def _read_record(self, slot: _Slot) -> Optional[Dict[str, Any]]:
        """The schedule file's record (``pid``, ``schedule``, ``next``), if readable."""
        try:
            text = slot.schedule_lock.read().decode("utf-8", "replace").strip()
            import json  # lock-directory mode only: other users never pay for it

            record, _ = json.JSONDecoder().raw_decode(text) if text else (None, 0)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _write_record(self, job: Job, slot: _Slot, due: float) -> None:
        assert job.schedule is not None
        record = {
            "pid": os.getpid(),
            "manager": self._token,
            "job": job.id,
            "schedule": job.schedule.description,
            "next": self._to_wall(job, due),
        }
        try:
            import json

            slot.schedule_lock.write((json.dumps(record) + "\n").encode())
        except OSError:
            logger.error(
                "job %r: cannot record its next due time in %s; a process taking over "
                "its schedule may repeat a run",
                job.id,
                slot.schedule_lock.path,
                exc_info=True,
            )

    def _show_standby(self, job: Job, slot: _Slot) -> None:
        """Show who runs ``job``'s schedule, and when next. Called with ``slot.lock`` held."""
        assert job.schedule is not None
        record = self._read_record(slot)
        pid = record.get("pid") if record else None
        nxt = record.get("next") if record else None
        if not isinstance(pid, int) or (record or {}).get("manager") == self._token:
            runner = "standby; no leader yet"  # nobody has written since this one led
        elif pid == os.getpid():
            runner = f"standby; another manager in this process (pid {pid}) runs it"
        else:
            runner = f"standby; leader is pid {pid}"
        next_run = None
        if (
            record is not None
            and record.get("schedule") == job.schedule.description
            and isinstance(nxt, (int, float))
            and math.isfinite(nxt)
        ):
            next_run = _utc(float(nxt))
        job.set_runner(runner, unless_stopped=True)
        job.set_next_run(next_run)

    def _resign(self, slot: _Slot) -> None:
        """Give up ``slot``'s schedule (no-op if not leading). ``slot.lock`` held."""
        slot.leading = False
        slot.free_since = None
        slot.schedule_lock.release()  # unlock, and close: a fresh descriptor next time

    def _try_lead(self, slot: _Slot) -> bool:
        """Take the schedule lock if free; a deferring process waits for it to stay free."""
        if not slot.schedule_lock.try_acquire():
            slot.free_since = None
            return False
        if not self._deferring:
            return True
        now = time.monotonic()
        if slot.free_since is not None and now - slot.free_since >= DEFER_SECONDS:
            return True
        if slot.free_since is None:
            slot.free_since = now
        slot.schedule_lock.release(close=False)
        return False

    def _elect(self) -> None:
        """One election round: try to lead every job this process stands by for."""
        for job in self._all_jobs():
            slot = self._slots.get(job.id)
            if slot is None:
                continue
            with slot.lock:
                if slot.job is not job or slot.leading or job.stopped:
                    continue
                try:
                    won = self._try_lead(slot)
                except OSError as exc:
                    if slot.problem != str(exc):
                        slot.problem = str(exc)
                        logger.error(
                            "job %r: cannot use lock file %s: %s",
                            job.id,
                            slot.schedule_lock.path,
                            exc,
                        )
                    continue
                slot.problem = None
                if won:
                    self._lead(job, slot)
                else:
                    self._show_standby(job, slot)

    def _ensure_elector(self, *, after_fork: bool = False) -> None:
        with self._jobs_lock:
            if self._closed or (self._elector is not None and self._elector.is_alive()):
                return
            self._elector_wake = threading.Event()
            thread = threading.Thread(
                target=_election_loop,
                args=(weakref.ref(self), self._elector_wake, after_fork),
                name="bgjobs-election",
                daemon=True,
            )
            self._elector = thread
            thread.start()

    # -- lifecycle --------------------------------------------------------------------------

    def _release(self) -> None:
        self._elector_wake.set()
        self._timers.shutdown()

    # -- fork -------------------------------------------------------------------------------

    def _after_fork_in_parent(self) -> None:
        """Hand every schedule this process leads to its children (they take them over)."""
        if self._host is None:
            return
        with self._jobs_lock:
            if self._closed:
                return
            self._deferring = True
            slots = list(self._slots.values())
        for slot in slots:
            with slot.lock:
                job = slot.job
                if job is None or not slot.leading:
                    continue
                self._disarm(job)
                self._resign(slot)
                self._show_standby(job, slot)

    def _reinit_after_fork(self) -> None:
        """Rebuild every lock and re-arm the schedules.

        Only the thread that called ``fork()`` exists here; any lock may have been held by
        one that does not. Runs that thread was in continue, so their run locks stay held.
        """
        super()._reinit_after_fork()
        hostlock.reinit_after_fork()  # lock files usable before the elector starts
        self._timers.reinit_after_fork()
        armed, self._armed = self._armed, {}
        self._armed_lock = threading.Lock()
        self._elector = None
        self._elector_wake = threading.Event()
        self._deferring = False
        self._token = _new_token()
        for slot in self._slots.values():
            slot.lock = threading.Lock()
            slot.leading = False
            slot.free_since = None
        live = 0
        for job in self._jobs.values():
            if job.stopped or self._closed or job.schedule is None:
                continue
            live += 1
            if self._host is None:
                tick = armed.get(job)
                due = tick.due if tick is not None else job.schedule.first_due(self._now(job))
                self._arm(job, due)
            else:
                job.set_runner("standby; taking over from the parent process")
        if self._host is not None and live:
            self._ensure_elector(after_fork=True)
        elif live:
            _warn_forked_without_lock_dir(live)


def _election_loop(
    ref: weakref.ReferenceType[LocalJobManager], wake: threading.Event, after_fork: bool
) -> None:
    """The ``bgjobs-election`` thread: retry standby schedules until the manager goes."""
    waits: List[float] = list(_AFTER_FORK_RETRIES) if after_fork else []
    while True:
        manager = ref()
        if manager is None or manager._closed:
            return
        try:
            manager._elect()
        except Exception:  # never die silently: the schedules would never be taken over
            logger.critical("bgjobs election round failed", exc_info=True)
        del manager
        wake.wait(waits.pop(0) if waits else ELECTION_INTERVAL)


def _new_token() -> str:
    return os.urandom(6).hex()


def _check_max_workers(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_workers must be a whole number >= 1, got {value!r}")


_fork_warning_pid = 0  # the process that already logged the no-lock-directory warning


def _warn_forked_without_lock_dir(live: int) -> None:
    global _fork_warning_pid
    if _fork_warning_pid == os.getpid():
        return
    _fork_warning_pid = os.getpid()
    logger.warning(
        "bgjobs: process %d was forked from %d with %d scheduled job(s) and no lock "
        "directory, so each process now runs them (every job runs once per process). "
        "Set BGJOBS_LOCK_DIR (or LocalJobManager(lock_dir=...)) to have one process per "
        "host run them.",
        os.getpid(),
        os.getppid(),
        live,
    )
