"""The local runtime: jobs run in this process, on timers.

Each job has at most one armed timer (a :class:`~bgjobs.timers.TimerHandle` on the
manager's :class:`~bgjobs.timers.TimerQueue`). When it fires, the tick first arms the next
timer — for the schedule's next due time after the one that just fired, so runs never
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
:mod:`bgjobs.hostlock`), the processes sharing it run each scheduled fire once between them:

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

import atexit
import contextlib
import logging
import math
import os
import threading
import time
import weakref
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Union

from .execution import Job, ManagedJobs
from .hostlock import HostLock, LockDirectory, lock_file_name
from .schedules import Clock
from .timers import DEFAULT_MAX_WORKERS, TimerHandle, TimerQueue

__all__ = ["CATCH_UP_WINDOW", "DEFER_SECONDS", "ELECTION_INTERVAL", "LocalJobManager"]

logger = logging.getLogger(__name__)

ELECTION_INTERVAL = 1.0
"""Seconds between a standby process's attempts to take over a schedule."""

DEFER_SECONDS = 1.5
"""A process that has forked takes a schedule only after finding it unclaimed this long."""

CATCH_UP_WINDOW = 30.0
"""A new leader runs a fire the previous one missed only if it was due this recently."""

DEFAULT_SHUTDOWN_TIMEOUT = 10.0
"""Seconds running jobs get to finish at exit, unless ``BGJOBS_SHUTDOWN_TIMEOUT`` says."""

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


class LocalJobManager(ManagedJobs):
    """Runs jobs in-process on timers, with per-job overlap locks and metrics.

    ``clock`` replaces the time source used for due times (tests; a clock with a
    ``wait(condition, timeout)`` method also decides how timers wait); ``env`` is where
    ``BGJOBS_TIMEZONE``, ``BGJOBS_LOCK_DIR`` and ``BGJOBS_SHUTDOWN_TIMEOUT`` are read
    (default ``os.environ``). ``lock_dir`` (default ``BGJOBS_LOCK_DIR``; ``None`` and unset
    mean no coordination) makes all processes sharing the directory run each scheduled
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
        lock_dir: Union[str, os.PathLike[str], None] = None,
        max_workers: Optional[int] = None,
    ) -> None:
        super().__init__(clock=clock, env=env)
        source: Mapping[str, Any] = os.environ if env is None else env
        self._shutdown_timeout = _shutdown_timeout(source)
        wait = getattr(self._clock, "wait", None)  # a test clock's: see TimerQueue
        self._timers = TimerQueue(
            self._clock, max_workers=_max_workers(max_workers, source), wait=wait
        )
        if lock_dir is None:
            lock_dir = str(source.get("BGJOBS_LOCK_DIR") or "").strip() or None
        self._host: Optional[LockDirectory] = (
            LockDirectory(lock_dir) if lock_dir is not None else None
        )
        # _slots (job id -> _Slot), _closed and _deferring are guarded by the table lock
        # (_jobs_lock). Slots are never removed, so a lookup alone needs no lock.
        self._slots: Dict[str, _Slot] = {}
        self._closed = False
        self._shut_down = False  # shutdown() was called: the exit hook leaves it alone
        self._deferring = False  # this process forked: leave schedules to its children
        self._elector: Optional[threading.Thread] = None
        self._elector_wake = threading.Event()
        self._token = _new_token()  # tells this manager's records from others'
        _register(self)

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

    def _start(self, job: Job) -> None:
        assert job.schedule is not None
        if self._closed:
            raise RuntimeError(
                f"cannot schedule job {job.id!r}: this LocalJobManager has been shut down"
            )
        if self._host is None:
            self._arm(job, job.schedule.first_due(self._now(job)))
            return
        slot = self._slots.get(job.id)
        if slot is None:
            slot = self._slots[job.id] = _Slot(self._host, job.id)
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
        assert job.schedule is not None
        wall = self._to_wall(job, due)
        with job.state_lock:
            if job.stopped:
                return
            # Armed under the state lock so a concurrent stop either sees and cancels this
            # timer or makes this call return above.
            job.handle = self._timers.call_at(due, job.schedule.wall_clock, self._tick, job, due)
            job.next_run = _utc(wall)

    def _tick(self, job: Job, due: float) -> None:
        """A timer fired (on a pool worker): name the thread for the job while it runs."""
        thread = threading.current_thread()
        pool_name, thread.name = thread.name, f"bgjobs-{job.id}"
        try:
            self._fire(job, due)
        finally:
            thread.name = pool_name

    def _cancel(self, job: Job) -> None:
        with job.state_lock:
            tick, job.handle = job.handle, None
        if tick is not None:
            tick.cancel()
        slot = self._slots.get(job.id)
        if slot is not None:
            with slot.lock:
                if slot.job is job:
                    slot.job = None
                    self._resign(slot)
                    with job.state_lock:
                        job.runner = None

    def _fire(self, job: Job, due: float) -> None:
        assert job.schedule is not None
        slot = self._slots.get(job.id)
        if slot is None:
            with job.state_lock:
                if job.stopped:
                    return
            nxt, missed = job.schedule.next_due(due, self._now(job))
            self._arm(job, nxt)
            reason = _OVERRUN
        else:
            with slot.lock:
                if slot.job is not job or not slot.leading:
                    return  # resigned (stopped, replaced, forked) since this tick was armed
                with job.state_lock:
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
        slot = self._slots.get(job.id)
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
        with job.state_lock:
            job.runner = f"this process (pid {os.getpid()})"
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
        if count <= 0:
            return
        with job.state_lock:
            job.skips += count
        for _ in range(count):
            self._metrics.record_skip()
        logger.info("job %r: %d due time(s) skipped: %s", job.id, count, reason)

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
        with job.state_lock:
            if not job.stopped:
                job.runner = runner
                job.next_run = next_run

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
                if slot.job is not job or slot.leading:
                    continue
                with job.state_lock:
                    if job.stopped:
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

    # -- shutdown ---------------------------------------------------------------------------

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Stop this manager for good and wait for running jobs.

        Cancels every schedule (a standby process takes over those this one ran), then
        waits up to ``timeout`` seconds — ``None``: ``BGJOBS_SHUTDOWN_TIMEOUT``, default 10
        — for running jobs (a run on the calling thread excepted). Returns ``True`` if
        none is still running; each one that is gets a warning naming it. Afterwards
        ``schedule_job``/``schedule_cron_job`` raise ``RuntimeError``; ``trigger_job``
        still works. Every live manager is shut down like this at interpreter exit.
        """
        self._shut_down = True  # first: the exit hook must not wait for these runs again
        self._close()
        timeout = self._shutdown_timeout if timeout is None else timeout
        return self._await_runs(timeout, timeout)

    def _close(self) -> None:
        with self._jobs_lock:
            self._closed = True
        self.stop_all_jobs()
        self._elector_wake.set()

    def _await_runs(self, wait: float, timeout: float) -> bool:
        """Wait ``wait`` seconds for running jobs; name those left (``timeout``: the setting)."""
        if self.wait_idle(max(0.0, wait)):
            return True
        me = threading.get_ident()
        with self._idle:
            running = [job_id for ident, job_id in self._running.items() if ident != me]
        for job_id in running:
            job = self._job(job_id)
            logger.warning(
                "job %r (%s) is still running after the %gs shutdown timeout; not waiting "
                "for it (BGJOBS_SHUTDOWN_TIMEOUT sets the timeout)",
                job_id,
                job.name if job is not None else "?",
                timeout,
            )
        return False

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
                with job.state_lock:
                    tick, job.handle = job.handle, None
                if tick is not None:
                    tick.cancel()
                self._resign(slot)
                self._show_standby(job, slot)

    def _after_fork_in_child(self) -> int:
        """Rebuild every lock and re-arm the schedules; returns the number of live jobs.

        Only the thread that called ``fork()`` exists here; any lock may have been held by
        one that does not. Runs that thread was in continue, so their run locks stay held.
        """
        # The execution core's fork hook has already replaced the core's and the jobs' locks:
        # it is registered when bgjobs.execution is imported, before this module's hook.
        self._timers.reinit_after_fork()
        self._elector = None
        self._elector_wake = threading.Event()
        self._deferring = False
        self._token = _new_token()
        continuing = set(self._running.values())
        for slot in self._slots.values():  # their descriptors are closed by bgjobs.hostlock
            slot.lock = threading.Lock()
            slot.leading = False
            slot.free_since = None
        live = 0
        for job in self._jobs.values():
            tick, job.handle = job.handle, None
            if job.status == "running" and job.id not in continuing:
                job.status = "stopped" if job.stopped else "scheduled"
            if job.stopped or self._closed or job.schedule is None:
                continue
            live += 1
            if self._host is None:
                due = tick.due if isinstance(tick, TimerHandle) else None
                self._arm(job, due if due is not None else job.schedule.first_due(self._now(job)))
            else:
                job.runner = "standby; taking over from the parent process"
        if self._host is not None and live:
            self._ensure_elector(after_fork=True)
        return live


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


def _max_workers(given: Optional[int], env: Mapping[str, Any]) -> int:
    raw: object = given if given is not None else env.get("BGJOBS_MAX_WORKERS")
    if raw is None or str(raw).strip() == "":
        return DEFAULT_MAX_WORKERS
    try:
        value = int(str(raw))
    except ValueError:
        value = 0
    if value < 1 or isinstance(raw, bool):
        raise ValueError(
            f"max_workers / BGJOBS_MAX_WORKERS must be a whole number >= 1, got {raw!r}"
        )
    return value


def _shutdown_timeout(env: Mapping[str, Any]) -> float:
    raw = env.get("BGJOBS_SHUTDOWN_TIMEOUT")
    if raw is None or str(raw).strip() == "":
        return DEFAULT_SHUTDOWN_TIMEOUT
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"BGJOBS_SHUTDOWN_TIMEOUT must be a number of seconds >= 0 (e.g. 10), got {raw!r}"
        )
    return value


# -- process-wide hooks: the live managers, exit and fork -------------------------------------

# Guards _live_managers and _hooks_installed. Rebuilt in a forked child.
_registry_lock = threading.Lock()
_live_managers: weakref.WeakSet[LocalJobManager] = weakref.WeakSet()
_hooks_installed = False
_exiting = False
_fork_warning_pid = 0  # the process that already logged the no-lock-directory warning


def _register(manager: LocalJobManager) -> None:
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
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(
            after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
        )


def _managers() -> List[LocalJobManager]:
    with _registry_lock:
        return list(_live_managers)


def _exit_hook() -> None:
    """Interpreter exit: stop every manager's schedules, give running jobs their timeout."""
    global _exiting
    with _registry_lock:
        if _exiting:
            return
        _exiting = True
        # A manager whose shutdown() was called already had its wait, or is having it.
        managers = [m for m in _live_managers if not m._shut_down]
    started = time.monotonic()
    for manager in managers:
        try:
            manager._close()
        except Exception:
            logger.exception("bgjobs: stopping %r at exit failed", manager)
    for manager in managers:
        remaining = manager._shutdown_timeout - (time.monotonic() - started)
        running = manager.running_job_ids()
        if running:
            logger.info(
                "bgjobs: waiting up to %.3gs for running job(s) %s before exit",
                max(0.0, remaining),
                ", ".join(repr(job_id) for job_id in running),
            )
        try:
            manager._await_runs(remaining, manager._shutdown_timeout)
        except Exception:
            logger.exception("bgjobs: waiting for %r at exit failed", manager)


def _after_fork_in_parent() -> None:
    managers = [m for m in _managers() if m._host is not None]
    if managers:
        # On a thread of its own: the hand-over takes the managers' locks, and a fork
        # hook must not wait for a lock that another thread may hold.
        threading.Thread(
            target=_hand_over_to_children,
            args=(managers,),
            name="bgjobs-fork-handover",
            daemon=True,
        ).start()


def _hand_over_to_children(managers: List[LocalJobManager]) -> None:
    for manager in managers:
        try:
            manager._after_fork_in_parent()
        except Exception:
            logger.exception("bgjobs: handing schedules to a forked child failed")


def _after_fork_in_child() -> None:
    global _registry_lock, _fork_warning_pid
    _registry_lock = threading.Lock()
    unshared = 0
    for manager in list(_live_managers):
        try:
            live = manager._after_fork_in_child()
        except Exception:
            logger.exception("bgjobs: re-arming schedules after fork failed")
            continue
        if manager._host is None:
            unshared += live
    if unshared and _fork_warning_pid != os.getpid():
        _fork_warning_pid = os.getpid()
        logger.warning(
            "bgjobs: process %d was forked from %d with %d scheduled job(s) and no lock "
            "directory, so each process now runs them (every job runs once per process). "
            "Set BGJOBS_LOCK_DIR (or LocalJobManager(lock_dir=...)) to have one process per "
            "host run them.",
            os.getpid(),
            os.getppid(),
            unshared,
        )
