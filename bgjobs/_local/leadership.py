"""Which process runs each job's schedule: the local runtime's host-wide leadership.

A :class:`~bgjobs.local.LocalJobManager` owns one coordinator and asks it, for every
fire, "do I lead this job?". Without a lock directory the answer is always yes
(:class:`SoloCoordinator`). With one (:class:`HostCoordinator`), the processes sharing
the directory elect one leader per job:

* **Who runs a schedule.** The process holding the kernel lock on
  ``schedule-<job id>.lock`` (see :mod:`bgjobs._local.hostlock`), tried when the job is
  scheduled, leads it: it arms the timers and writes its pid and the next due time into
  the file. The others stand by without timers; a daemon thread (``bgjobs-election``)
  retries the lock every :data:`ELECTION_INTERVAL` seconds, so when the leader dies —
  even by ``SIGKILL``, the kernel drops its locks — another process takes over within
  about a second. Leadership is per job *and per manager* (:class:`JobLeadership`), so
  processes that schedule different jobs, or two managers in one process, still work.
* **Which fire is which.** The due time in the record is the first fire not yet taken;
  the leader advances it *before* running a fire. A new leader continues from it: a
  pending fire runs at its time; a fire missed during the hand-over (due at most
  :data:`CATCH_UP_WINDOW` seconds ago) runs at once — unless the next one is less than
  half a period away, then it is coalesced into that one — and earlier misses are
  skipped like ticks coalesced after an overrun. A record that is older, or describes
  another schedule, or was written by this very manager for a job it just replaced,
  starts afresh: the first run one interval after the take-over, or the cron's next time.
* **No overlap anywhere.** Every run also holds ``job-<job id>.lock`` (the run claim),
  so a trigger in any process finds the job busy while it runs anywhere on the host.
* **Fork.** A process that forks resigns every schedule it leads, so its children take
  them over (``gunicorn --preload``: the workers run the jobs, not the arbiter), and
  takes one back only after finding it unclaimed for :data:`DEFER_SECONDS`. A forked
  child stands by and retries soon after the fork.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from abc import ABC, abstractmethod
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Tuple,
)

from .. import _time
from ..schedules import utc_datetime
from . import hostlock
from .hostlock import HostLock, LockDirectory, lock_file_name

if TYPE_CHECKING:
    from ..execution import Job

__all__ = [
    "CATCH_UP_WINDOW",
    "DEFER_SECONDS",
    "ELECTION_INTERVAL",
    "LATE",
    "Coordinator",
    "HostCoordinator",
    "JobLeadership",
    "ScheduleOwner",
    "SoloCoordinator",
]

logger = logging.getLogger(__name__)

ELECTION_INTERVAL = 1.0
"""Seconds between a standby process's attempts to take over a schedule."""

DEFER_SECONDS = 1.5
"""A process that has forked takes a schedule only after finding it unclaimed this long."""

CATCH_UP_WINDOW = 30.0
"""A new leader runs a fire the previous one missed only if it was due this recently."""

LATE = "its timer came up late"
"""The reason of a fire taken after due times passed unrun: its timer was late (the
manager says why, see ``LocalJobManager._lateness``)."""
_HANDOVER = "they passed while no process ran its schedule (coalesced into one run)"
_MISFIRED = (
    "no process ran its schedule then, and they are older than its misfire_grace ({grace:g}s)"
)
_AFTER_FORK_RETRIES = (0.05, 0.2)  # a fresh child tries again soon: its parent is resigning

Fire = Tuple[int, str]
"""A fire taken by its leader: how many due times before it passed unrun, and why."""


class ScheduleOwner(Protocol):
    """What a coordinator uses of the manager that owns it: its table, timers and clock."""

    @property
    def _jobs_lock(self) -> ContextManager[Any]: ...

    @property
    def _closed(self) -> bool: ...

    def _all_jobs(self) -> List[Job]: ...

    def _arm(self, job: Job, due: float) -> None: ...

    def _disarm(self, job: Job) -> None: ...

    def _now(self, job: Job) -> float: ...

    def _first_due(self, job: Job) -> float: ...

    def _to_wall(self, job: Job, due: float) -> float: ...

    def _from_wall(self, job: Job, wall: float) -> float: ...

    def _skip_missed(self, job: Job, count: int, reason: str) -> None: ...

    def _record_lost_start(self, job: Job, scheduled_for: float, pid: int) -> None: ...

    def _housekeeping(self) -> None: ...


class Coordinator(ABC):
    """Decides whether this manager runs a job's fires; the manager arms and runs them.

    Holds its owner weakly: the owner holds the coordinator, and a reference cycle would
    keep a dropped manager (and its election thread) alive until the garbage collector ran.
    """

    def __init__(self, owner: ScheduleOwner) -> None:
        self._owner_ref = weakref.ref(owner)
        self._owner: ScheduleOwner = weakref.proxy(owner)
        #: Each job id's leadership, with a lock directory; empty without one.
        self.leaderships: Dict[str, JobLeadership] = {}

    #: Whether the owner claims a fire in the store when it arms it, ahead of the fire:
    #: safe only where one process leads a job's schedule (a lock directory), since its
    #: successor must be able to take over a claim whose fire never ran.
    claims_ahead = True

    @property
    def lock_dir(self) -> Optional[str]:
        """The lock directory shared with other processes, or ``None``."""
        return None

    @abstractmethod
    def start(self, job: Job) -> None:
        """Take up a freshly scheduled ``job``: arm it, or stand by. Table lock held."""

    @abstractmethod
    def cancel(self, job: Job) -> None:
        """Give up ``job`` (stopped or replaced); its timer is already disarmed."""

    def restore(self, job: Job, due: float) -> None:
        """Take ``job`` up again after a failed replacement, its next fire at ``due`` if
        this manager led it. Table lock held. By default, as :meth:`start` does."""
        self.start(job)

    @abstractmethod
    def take_fire(self, job: Job, due: float, key: Optional[datetime] = None) -> Optional[Fire]:
        """If this manager leads ``job``, take its fire at ``due`` and arm the next one.

        Returns the due times skipped before it and why, or ``None`` when the fire is not
        to run here (the job was stopped, or this process no longer leads it).
        """

    @abstractmethod
    def try_claim(self, job: Job) -> bool:
        """Claim a run of ``job`` beyond this manager; ``False`` if it runs elsewhere."""

    @abstractmethod
    def release_claim(self, job: Job) -> None:
        """Release what :meth:`try_claim` took."""

    @abstractmethod
    def release(self) -> None:
        """The owner is closed: stop any thread of the coordinator."""

    @abstractmethod
    def after_fork_in_parent(self) -> None:
        """This process forked: hand the schedules it leads to its children, if it can."""

    @abstractmethod
    def reinit_after_fork(self, live: List[Job], dues: Mapping[Job, float]) -> None:
        """In a forked child: take up the ``live`` scheduled jobs again; ``dues`` are the
        due times of the timers the parent had armed (the owner's timers are gone)."""


class SoloCoordinator(Coordinator):
    """No lock directory: this process leads every job it schedules."""

    claims_ahead = False  # every process has its own timers: the first to claim runs it

    def start(self, job: Job) -> None:
        assert job.schedule is not None
        self._owner._arm(job, self._owner._first_due(job))

    def cancel(self, job: Job) -> None:
        pass  # nothing held beyond the timer

    def restore(self, job: Job, due: float) -> None:
        # A due time that passed while the replacement was tried fires at once, late, as
        # any late timer does.
        self._owner._arm(job, due)

    def try_claim(self, job: Job) -> bool:
        return True  # other processes run their own copies; the run lock is enough

    def release_claim(self, job: Job) -> None:
        pass

    def release(self) -> None:
        pass  # no thread of its own

    def after_fork_in_parent(self) -> None:
        pass  # parent and child both run the jobs (the child warns)

    def take_fire(self, job: Job, due: float, key: Optional[datetime] = None) -> Optional[Fire]:
        assert job.schedule is not None
        if job.stopped:
            return None
        nxt, missed = job.schedule.next_due(due, self._owner._now(job))
        self._owner._arm(job, nxt)
        return missed, LATE

    def reinit_after_fork(self, live: List[Job], dues: Mapping[Job, float]) -> None:
        """Re-arm on the parent's due times: both processes now run the jobs (warned)."""
        for job in live:
            assert job.schedule is not None
            due = dues.get(job)
            if due is None:
                due = job.schedule.first_due(self._owner._now(job))
            self._owner._arm(job, due)
        if live:
            _warn_forked_without_lock_dir(len(live))


class JobLeadership:
    """One job id's leadership in one manager: its lock files and whether it leads."""

    def __init__(self, directory: LockDirectory, job_id: str) -> None:
        # Guards every field below. A tick records its fire and arms the next one under
        # it, and leadership is given up under it, so no fire is recorded by a process
        # that no longer leads. Taken after the table lock, before a job's state lock.
        self.lock = threading.Lock()
        #: Held by the process that runs this job's schedule; carries its record.
        self.schedule_lock: HostLock = directory.lock(lock_file_name("schedule", job_id))
        #: Held for the length of every run, by whichever process runs it.
        self.run_claim: HostLock = directory.lock(lock_file_name("job", job_id))
        #: Whether run_claim's descriptor stays open between runs (see _keep_open).
        self.keep_run_claim_open = _keep_open()
        self.job: Optional[Job] = None  # the Job whose schedule this leadership serves
        self.leading = False
        self.free_since: Optional[float] = None  # a deferring process's first free probe
        self.problem: Optional[str] = None  # last election error logged (logged once)
        self.catching_up = False  # the armed tick runs a fire missed during a hand-over
        self.restore_due: Optional[float] = None  # a failed replacement's job: its due time
        #: (pid, manager token, job, JSON text) of the record's fixed part (_record_head).
        self.record_head: Optional[Tuple[int, str, Job, str]] = None


class HostCoordinator(Coordinator):
    """A lock directory: each job runs on the one process (and manager) that leads it."""

    def __init__(self, owner: ScheduleOwner, directory: LockDirectory) -> None:
        super().__init__(owner)
        self._directory = directory
        # leaderships (job id -> JobLeadership) and _deferring are guarded by the owner's
        # table lock. Leaderships are never removed, so a lookup alone needs no lock.
        self._deferring = False  # this process forked: leave schedules to its children
        self._elector: Optional[threading.Thread] = None
        self._elector_wake = threading.Event()
        self._token = _new_token()  # tells this manager's records from others'

    @property
    def lock_dir(self) -> Optional[str]:
        return self._directory.path

    def _leadership(self, job_id: str) -> JobLeadership:
        """``job_id``'s leadership, created on first use."""
        leadership = self.leaderships.get(job_id)
        if leadership is None:
            with self._owner._jobs_lock:
                leadership = self.leaderships.get(job_id)
                if leadership is None:
                    leadership = self.leaderships[job_id] = JobLeadership(self._directory, job_id)
        return leadership

    def start(self, job: Job) -> None:
        leadership = self._leadership(job.id)
        with leadership.lock:
            # Open both lock files now: a planted symbolic link fails schedule_job.
            leadership.run_claim.open()
            if not leadership.keep_run_claim_open:
                leadership.run_claim.release()  # closed: thousands of jobs, few descriptors
            leadership.schedule_lock.open()
            leadership.free_since = None
            leadership.problem = None
            leadership.job = job
            try:
                if not self._deferring and leadership.schedule_lock.try_acquire():
                    self._lead(job, leadership, installing=True)
                else:
                    self._show_standby(job, leadership)
            except BaseException:
                leadership.job = None  # the table keeps its previous job; leave no trace here
                self._resign(leadership)
                raise
        self._ensure_elector()

    def restore(self, job: Job, due: float) -> None:
        leadership = self._leadership(job.id)
        leadership.restore_due = due
        try:
            self.start(job)
        finally:
            leadership.restore_due = None

    def cancel(self, job: Job) -> None:
        leadership = self.leaderships.get(job.id)
        if leadership is not None:
            with leadership.lock:
                if leadership.job is job:
                    leadership.job = None
                    self._resign(leadership)
                    job.set_runner(None)

    def take_fire(self, job: Job, due: float, key: Optional[datetime] = None) -> Optional[Fire]:
        assert job.schedule is not None
        leadership = self.leaderships.get(job.id)
        if leadership is None:
            return None
        with leadership.lock:
            if leadership.job is not job or not leadership.leading:
                return None  # resigned (stopped, replaced, forked) since this tick was armed
            if job.stopped:
                return None
            nxt, missed = job.schedule.next_due(due, self._owner._now(job))
            # Record first: a successor starts after this fire, so it never runs twice.
            # "taken" names this fire: should this process die before the store has its
            # start (written behind), the successor records it as abandoned.
            self._write_record(job, leadership, nxt, taken=key)
            self._owner._arm(job, nxt)
            reason = _HANDOVER if leadership.catching_up else LATE
            leadership.catching_up = False
        return missed, reason

    def try_claim(self, job: Job) -> bool:
        return self._leadership(job.id).run_claim.try_acquire()

    def release_claim(self, job: Job) -> None:
        leadership = self.leaderships.get(job.id)
        if leadership is not None:
            leadership.run_claim.release(close=not leadership.keep_run_claim_open)

    def release(self) -> None:
        self._elector_wake.set()

    # -- leading ------------------------------------------------------------------------

    def _lead(self, job: Job, leadership: JobLeadership, *, installing: bool = False) -> None:
        """Run ``job``'s schedule here, from where the previous leader left it.

        Called with ``leadership.lock`` held and the schedule lock just acquired; ``installing``
        when ``job`` was just scheduled here (rather than taken over).
        """
        assert job.schedule is not None
        leadership.leading = True
        leadership.free_since = None
        record = self._read_record(leadership)
        self._note_lost_start(job, record)
        due = self._resume_due(job, leadership, record, installing=installing)
        self._write_record(job, leadership, due)
        job.set_runner(f"this process (pid {os.getpid()})")
        self._owner._arm(job, due)
        if logger.isEnabledFor(logging.INFO):  # the time's formatting costs as much as a file
            logger.info(
                "this process (pid %d) now runs the schedule of job %r; next run %s",
                os.getpid(),
                job.id,
                utc_datetime(self._owner._to_wall(job, due)).isoformat(),
            )

    def _resume_due(
        self,
        job: Job,
        leadership: JobLeadership,
        record: Optional[Dict[str, Any]],
        *,
        installing: bool,
    ) -> float:
        """The first due time a new leader arms (see "Which fire is which" above), from the
        schedule's ``record`` as the previous leader left it."""
        schedule = job.schedule
        assert schedule is not None
        now = self._owner._now(job)
        if leadership.restore_due is not None:  # put back as it was: the same grid
            return leadership.restore_due
        fresh = self._owner._first_due(job) if installing else schedule.first_due(now)
        if record is None or record.get("schedule") != schedule.description:
            return fresh
        if installing and record.get("manager") == self._token:
            return fresh  # this manager replaced its own job: a new schedule, as always
        recorded = record.get("next")
        if not isinstance(recorded, (int, float)) or not math.isfinite(recorded):
            return fresh
        due = self._owner._from_wall(job, float(recorded))
        if now < due <= fresh + 1e-6:
            return due  # the pending fire, on the previous leader's grid
        grace = job.policy.misfire_grace if job.policy is not None else None
        if grace is not None and due <= now:
            return self._resume_within_grace(job, leadership, due, now, grace)
        if now - CATCH_UP_WINDOW <= due <= now:
            # Missed during the hand-over: run it now — unless the fire after it is less
            # than half a period away; then coalesce it into that one.
            following, _ = schedule.next_due(due, due)
            upcoming, missed = schedule.next_due(due, now)
            if upcoming - now < (following - due) / 2:
                self._owner._skip_missed(job, missed + 1, _HANDOVER)
                return upcoming
            leadership.catching_up = True
            return due
        return fresh

    def _resume_within_grace(
        self, job: Job, leadership: JobLeadership, due: float, now: float, grace: float
    ) -> float:
        """With ``misfire_grace``: of the fires missed since ``due`` (while no process
        ran the schedule: down, suspended, starved), run the first one at most ``grace``
        seconds old, once, now; skip and count the others. Never more than one run."""
        schedule = job.schedule
        assert schedule is not None
        if now - due <= grace:
            leadership.catching_up = True
            return due
        # The first fire after `due` that is within the grace (or, if none is, upcoming).
        candidate, passed = schedule.next_due(due, now - grace)
        self._owner._skip_missed(job, passed + 1, _MISFIRED.format(grace=grace))
        if candidate <= now:
            leadership.catching_up = True
        return candidate

    def _read_record(self, leadership: JobLeadership) -> Optional[Dict[str, Any]]:
        """The schedule file's record (``pid``, ``schedule``, ``next``), if readable."""
        try:
            text = leadership.schedule_lock.read().decode("utf-8", "replace").strip()
            import json  # lock-directory mode only: other users never pay for it

            record, _ = json.JSONDecoder().raw_decode(text) if text else (None, 0)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _note_lost_start(self, job: Job, record: Optional[Dict[str, Any]]) -> None:
        """The previous leader's last fire (from its ``record``), if that process is gone:
        the owner records it as abandoned unless its run is on record (the start may have
        died with it)."""
        if record is None or record.get("manager") == self._token:
            return
        pid, taken = record.get("pid"), record.get("taken")
        if isinstance(pid, int) and isinstance(taken, (int, float)) and math.isfinite(taken):
            self._owner._record_lost_start(job, float(taken), pid)

    def _write_record(
        self, job: Job, leadership: JobLeadership, due: float, *, taken: Optional[datetime] = None
    ) -> None:
        # Written on every fire: the fields that never change for this leader are JSON
        # encoded once (json.dumps of the whole record was a fifth of a fire's lock-file
        # cost); the two times are floats, which json writes as repr() writes them.
        record = (
            f'{self._record_head(job, leadership)}, "next": '
            f"{_json_number(self._owner._to_wall(job, due))}"
        )
        if taken is not None:
            record += f', "taken": {_json_number(taken.timestamp())}'
        try:
            leadership.schedule_lock.write((record + "}\n").encode())
        except OSError:
            logger.error(
                "job %r: cannot record its next due time in %s; a process taking over "
                "its schedule may repeat a run",
                job.id,
                leadership.schedule_lock.path,
                exc_info=True,
            )

    def _record_head(self, job: Job, leadership: JobLeadership) -> str:
        """The record's fixed part, ``{"pid": …, "schedule": "…"`` (no closing brace),
        encoded once per leader (this process, this manager, this job)."""
        assert job.schedule is not None
        pid, head = os.getpid(), leadership.record_head
        if head is None or head[0] != pid or head[1] != self._token or head[2] is not job:
            # json.dumps of the dict {pid, manager, job, schedule}, without its closing
            # brace, written out: building the dict and an encoder cost more than the rest.
            from json.encoder import encode_basestring_ascii as quote

            text = (
                f'{{"pid": {pid}, "manager": {quote(self._token)}, "job": {quote(job.id)}, '
                f'"schedule": {quote(job.schedule.description)}'
            )
            head = leadership.record_head = (pid, self._token, job, text)
        return head[3]

    def _show_standby(self, job: Job, leadership: JobLeadership) -> None:
        """Show who runs ``job``'s schedule, and when next. Called with ``leadership.lock`` held."""
        assert job.schedule is not None
        record = self._read_record(leadership)
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
            next_run = utc_datetime(float(nxt))
        job.set_runner(runner, unless_stopped=True)
        job.set_next_run(next_run)

    def _resign(self, leadership: JobLeadership) -> None:
        """Give up ``leadership``'s schedule (no-op if not leading). ``leadership.lock`` held."""
        if leadership.leading and leadership.schedule_lock.held:
            self._forget_taken(leadership)
        leadership.leading = False
        leadership.free_since = None
        leadership.schedule_lock.release()  # unlock, and close: a fresh descriptor next time

    def _forget_taken(self, leadership: JobLeadership) -> None:
        """Drop ``taken`` from our record as we resign: this process lives on to write the
        run of that fire, so a successor (say, after a restart) has nothing to check."""
        record = self._read_record(leadership)
        if record is None or record.get("manager") != self._token or "taken" not in record:
            return
        del record["taken"]
        try:
            import json

            leadership.schedule_lock.write((json.dumps(record) + "\n").encode())
        except OSError:  # the successor checks the store for that fire instead: harmless
            logger.debug("cannot rewrite %s", leadership.schedule_lock.path, exc_info=True)

    # -- election -----------------------------------------------------------------------

    def _try_lead(self, leadership: JobLeadership) -> bool:
        """Take the schedule lock if free; a deferring process waits for it to stay free."""
        if not leadership.schedule_lock.try_acquire():
            leadership.free_since = None
            return False
        if not self._deferring:
            return True
        now = _time.monotonic()
        if leadership.free_since is not None and now - leadership.free_since >= DEFER_SECONDS:
            return True
        if leadership.free_since is None:
            leadership.free_since = now
        leadership.schedule_lock.release(close=False)
        return False

    def _elect(self) -> None:
        """One election round: try to lead every job this process stands by for."""
        for job in self._owner._all_jobs():
            leadership = self.leaderships.get(job.id)
            if leadership is None:
                continue
            with leadership.lock:
                if leadership.job is not job or leadership.leading or job.stopped:
                    continue
                try:
                    won = self._try_lead(leadership)
                except OSError as exc:
                    if leadership.problem != str(exc):
                        leadership.problem = str(exc)
                        logger.error(
                            "job %r: cannot use lock file %s: %s",
                            job.id,
                            leadership.schedule_lock.path,
                            exc,
                        )
                    continue
                leadership.problem = None
                if won:
                    self._lead(job, leadership)
                else:
                    self._show_standby(job, leadership)

    def _ensure_elector(self, *, after_fork: bool = False) -> None:
        with self._owner._jobs_lock:
            if self._owner._closed or (self._elector is not None and self._elector.is_alive()):
                return
            self._elector_wake = threading.Event()
            thread = threading.Thread(
                target=_election_loop,
                args=(self._owner_ref, self._elect, self._elector_wake, after_fork),
                name="bgjobs-election",
                daemon=True,
            )
            self._elector = thread
            thread.start()

    # -- fork ---------------------------------------------------------------------------

    def after_fork_in_parent(self) -> None:
        with self._owner._jobs_lock:
            if self._owner._closed:
                return
            self._deferring = True
            leaderships = list(self.leaderships.values())
        for leadership in leaderships:
            with leadership.lock:
                job = leadership.job
                if job is None or not leadership.leading:
                    continue
                self._owner._disarm(job)
                self._resign(leadership)
                self._show_standby(job, leadership)

    def reinit_after_fork(self, live: List[Job], dues: Mapping[Job, float]) -> None:
        """Stand by for every job (the parent resigns them) and elect again soon."""
        hostlock.reinit_after_fork()  # lock files usable before the elector starts
        self._elector = None
        self._elector_wake = threading.Event()
        self._deferring = False
        self._token = _new_token()
        for leadership in self.leaderships.values():
            leadership.lock = threading.Lock()
            leadership.leading = False
            leadership.free_since = None
        for job in live:
            job.set_runner("standby; taking over from the parent process")
        if live:
            self._ensure_elector(after_fork=True)


def _election_loop(
    owner_ref: weakref.ReferenceType[ScheduleOwner],
    elect: Callable[[], None],
    wake: threading.Event,
    after_fork: bool,
) -> None:
    """The ``bgjobs-election`` thread: retry standby schedules until the manager goes."""
    waits: List[float] = list(_AFTER_FORK_RETRIES) if after_fork else []
    while True:
        owner = owner_ref()  # held for the round: the coordinator reaches it weakly
        if owner is None or owner._closed:
            return
        try:
            elect()
            owner._housekeeping()  # runs whose process died are marked abandoned
        except Exception:  # never die silently: the schedules would never be taken over
            logger.critical("bgjobs election round failed", exc_info=True)
        del owner
        wake.wait(waits.pop(0) if waits else ELECTION_INTERVAL)


KEPT_OPEN_RUN_LOCKS: Optional[int] = None
"""Run-lock descriptors a process keeps open between runs: opening ``job-<id>.lock`` anew
for every run cost more than a no-op run, but a descriptor per job runs out (the schedule
lock already holds one per job) for thousands of jobs. The first jobs keep theirs: a
quarter of the soft limit on open files (at least 256), unless set."""

_kept_open = 0
_kept_open_limit = 0  # a quarter of the descriptors, read on first use
_kept_open_lock = threading.Lock()


def _quarter_of_descriptors() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return 256
    return 1 << 20 if soft == resource.RLIM_INFINITY else max(256, soft // 4)


def _reset_kept_open_lock() -> None:
    global _kept_open_lock
    _kept_open_lock = threading.Lock()  # a thread of the parent may have held it


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reset_kept_open_lock)


def _keep_open() -> bool:
    global _kept_open, _kept_open_limit
    with _kept_open_lock:
        # The limit is read once (a system call and an import per job cost scheduling
        # more than the lock files did); raising the soft limit later only keeps fewer.
        if _kept_open_limit == 0:
            _kept_open_limit = _quarter_of_descriptors()
        if _kept_open >= (KEPT_OPEN_RUN_LOCKS or _kept_open_limit):
            return False
        _kept_open += 1
        return True


def _json_number(value: float) -> str:
    """``value`` as ``json.dumps`` writes it (``repr``, or ``Infinity``/``NaN``)."""
    if math.isfinite(value):
        return repr(float(value))
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _new_token() -> str:
    return os.urandom(6).hex()


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
