"""The state store: run history and each job's host-wide state, shared by every process.

A local app usually runs as many processes (gunicorn workers); each has its own timers and
its own memory, so counters, the last error, "who runs it now" and pause flags must live
somewhere all of them see. That is ``state.db`` in the state directory, a SQLite file
(standard library :mod:`sqlite3`, WAL, a busy timeout, a versioned schema)::

    store = open_store("/run/myapp/bgjobs")        # <dir>/state.db
    if store.claim_fire("report", due):            # True in exactly one process
        store.start_run(run)
        ...
        store.finish_run(finished)                 # counters and last_* in one transaction
    store.jobs()["report"].runs                    # what every process has run

Two guarantees are made by construction, not by timing:

* **Each scheduled fire runs once:** :meth:`StateStore.claim_fire` inserts
  ``(job id, due time)`` under a unique constraint; one insert wins, on the whole host. The
  process leading a schedule claims each fire ahead (:meth:`StateStore.claim_fire_ahead`, in
  the writer's batch); its successor takes over a claim only while no run of that fire is on
  record (:meth:`StateStore.retake_fire`).
* **An idempotency key runs once:** :meth:`StateStore.claim_key` records the key with the
  run that owns it; later callers get that run's id back (keys are kept ``key_ttl``,
  at least 24 hours).

**Run records are written behind** where throughput matters: a manager's store
(``write_behind=True``) hands schedule claims, the starts and ends of scheduled runs and skip
counts to one writer thread per process, which lets them gather for up to 0.1 s and
commits them in one transaction of a few multi-row statements (see
:mod:`bgjobs._group_commit`). A manual, HTTP or CLI run's start is committed before the job
is entered and its end before the call returns (someone is waiting for its answer). Every
read first waits for what this process queued, so a process reads its own writes; other
processes see a scheduled run within about 0.1 s. What is queued at interpreter exit is
written then; a process killed with ``SIGKILL`` loses what was still queued: a run it was in
shows ``abandoned`` (found by any process), and one whose start was lost too is recorded
``abandoned`` by the process that takes its schedule over (:meth:`record_abandoned_fire`).

**A broken store never stops the jobs.** When ``state.db`` is unusable (read-only, full
disk, corrupt, locked past the busy timeout, wrong owner, a newer schema) every call
returns normally: writes are dropped and counted in ``dropped_writes``, reads return
nothing, claims are answered from memory (this process only), :attr:`StateStore.degraded`
says why and what fixes it, and one WARNING per condition says the same. A corrupt file
is moved aside to ``state.db.corrupt-<UTC time>`` and recreated. While degraded the store
tries the file again every ``retry_interval`` seconds; the first success logs INFO and
clears ``degraded``. A healthy store never drops a run record.

:class:`MemoryStore` implements the same interface in memory: no state directory, tests.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import logging
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from typing import (
    Any,
    Callable,
    Dict,
    Final,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
)

from . import _group_commit, _time
from ._group_commit import GroupCommit
from ._group_commit import Write as _Write
from .schedules import UTC, Clock, SystemClock, utc_datetime
from .types import JobRun, RunOutcome

__all__ = [
    "DEFAULT_KEEP_RUNS",
    "DEFAULT_KEY_TTL",
    "DEFAULT_MAX_AGE",
    "MIGRATIONS",
    "FireClaim",
    "STATE_DB_NAME",
    "JobRecord",
    "MemoryStore",
    "SQLiteStore",
    "StateStore",
    "evolve",
    "open_store",
]

_T = TypeVar("_T")


def evolve(value: _T, **changes: Any) -> _T:
    """A copy of a frozen dataclass with ``changes``: :func:`dataclasses.replace` without
    its per-field introspection, which cost half of a run's bookkeeping. Only for
    dataclasses without ``__post_init__`` or slots (``JobRun``, ``JobRecord``, ``JobStatus``)."""
    copy = object.__new__(type(value))
    fields = copy.__dict__
    fields.update(value.__dict__)
    fields.update(changes)
    return copy


logger = logging.getLogger(__name__)

STATE_DB_NAME = "state.db"
DEFAULT_KEEP_RUNS = 100
"""Runs kept per job (the newest; a run still going is never pruned)."""
DEFAULT_MAX_AGE = timedelta(days=7)
"""Runs that started longer ago than this are pruned."""
DEFAULT_KEY_TTL = timedelta(hours=24)
"""How long idempotency keys and fire claims are kept; also the smallest accepted value,
since the HTTP contract promises a key is honoured for at least 24 hours."""
DEFAULT_BUSY_TIMEOUT = 5.0
DEFAULT_RETRY_INTERVAL = 5.0
PRUNE_INTERVAL = 3600.0
"""Seconds between automatic prunes (done by a ``finish_run``, so no thread is needed)."""
SCHEDULE_CLAIM_TTL = 600.0
"""Seconds a claim made ahead by a schedule's leader is kept after its fire's due time. Such
a claim matters only until the fire ran (the run's record answers after that) or a new
leader took it over: minutes. Claims made at a dispatch are kept ``key_ttl`` (a retry may
come hours later); a schedule firing every second would otherwise keep 86,400 rows a day
per job."""

CLAIM_HURRY_AHEAD = 2 * _group_commit.WINDOW
"""A claim made ahead for a fire due sooner than this many seconds is committed halfway to
its fire rather than whenever the writer's window ends: its fire must find it committed."""
CLAIM_PRUNE_INTERVAL = 60.0
"""Seconds between prunes of expired fire claims (by the writer thread, after a batch)."""

TRACEBACK_MAX_LINES = 20
TRACEBACK_MAX_CHARS = 4096
ERROR_MAX_CHARS = 2000

FAILED_OUTCOMES = frozenset({"failed", "abandoned", "timed_out"})
"""Outcomes counted as failures (``timed_out`` ran past its limit; ``abandoned`` died)."""

PathArg = Union[str, "os.PathLike[str]"]

# -- schema ---------------------------------------------------------------------------------

MIGRATIONS: List[Tuple[str, ...]] = [
    # 1: the first schema. Times are Unix seconds (REAL). `jobs.running_*` is the newest
    # run still going; `fires` and `idempotency_keys` carry the once-only guarantees.
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            runs INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            skips INTEGER NOT NULL DEFAULT 0,
            total_duration REAL NOT NULL DEFAULT 0,
            last_run REAL,
            last_success REAL,
            last_failure REAL,
            last_error TEXT,
            last_duration REAL,
            last_outcome TEXT,
            running_run_id TEXT,
            running_pid INTEGER,
            running_host TEXT,
            next_run REAL,
            paused INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            trigger TEXT NOT NULL,
            scheduled_for REAL,
            started REAL NOT NULL,
            finished REAL,
            duration REAL,
            outcome TEXT NOT NULL,
            error TEXT,
            traceback TEXT,
            attempt INTEGER NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL
        )""",
        "CREATE INDEX runs_by_job ON runs (job_id, started)",
        "CREATE INDEX runs_running ON runs (job_id, started) WHERE outcome = 'running'",
        """CREATE TABLE fires (
            job_id TEXT NOT NULL,
            scheduled_for REAL NOT NULL,
            claimed REAL NOT NULL,
            PRIMARY KEY (job_id, scheduled_for)
        ) WITHOUT ROWID""",
        "CREATE INDEX fires_by_age ON fires (claimed)",
        """CREATE TABLE idempotency_keys (
            key TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            claimed REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX keys_by_age ON idempotency_keys (claimed)",
    ),
]
"""Migration ``i`` takes a file from schema version ``i`` to ``i + 1``; append, never edit.
All pending ones run in one transaction, so a file is at one version or the next."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema this code writes; a file with a higher ``meta.schema_version`` is not touched."""

_JOB_COLUMNS = (
    "job_id, runs, failures, skips, total_duration, last_run, last_success, last_failure, "
    "last_error, last_duration, last_outcome, running_pid, running_host, next_run, paused"
)
_RUN_COLUMNS = (
    "run_id, job_id, trigger, scheduled_for, started, finished, duration, outcome, error, "
    "traceback, attempt, pid, host"
)


# -- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRecord:
    """One job's state as the whole host (every process sharing the store) sees it.

    ``runs`` counts finished runs, ``failures`` those that failed, were abandoned or timed
    out; ``last_run``/``last_success``/``last_failure`` are start times; ``running_pid`` and
    ``running_host`` name the newest run still going (``None``: none is); ``next_run`` is
    what the scheduling process last announced (``None``: nothing scheduled).
    """

    job_id: str
    runs: int = 0
    failures: int = 0
    skips: int = 0
    total_duration: float = 0.0
    last_run: Optional[datetime] = None
    last_success: Optional[datetime] = None
    last_failure: Optional[datetime] = None
    last_error: Optional[str] = None
    last_duration: Optional[float] = None
    last_outcome: Optional[RunOutcome] = None
    running_pid: Optional[int] = None
    running_host: Optional[str] = None
    next_run: Optional[datetime] = None
    paused: bool = False


def _ts(value: datetime) -> float:
    """Unix seconds of an aware datetime. A datetime counts whole microseconds, and its
    ``timestamp()`` is the double nearest that many microseconds divided by 10**6, so equal
    times give equal keys in every process. (``round(…, 6)`` of it, which this used to
    apply, gives the same double for every such value and cost three times the
    conversion: four conversions per fire.)"""
    if value.tzinfo is UTC:  # how bgjobs makes them (utc_datetime)
        return value.timestamp()
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"the state store needs timezone-aware datetimes, got naive {value!r}; "
            "use bgjobs.schedules.utc_datetime(epoch) or datetime.now(timezone.utc)"
        )
    return value.timestamp()


def _opt_ts(value: Optional[datetime]) -> Optional[float]:
    return None if value is None else _ts(value)


def _dt(value: Optional[float]) -> Optional[datetime]:
    return None if value is None else utc_datetime(value)


def _latest(a: Optional[datetime], b: datetime) -> datetime:
    return b if a is None or b >= a else a


def clip_traceback(text: Optional[str]) -> Optional[str]:
    """The end of a traceback: its last ``TRACEBACK_MAX_LINES`` lines and at most
    ``TRACEBACK_MAX_CHARS`` characters (the end is where the exception is)."""
    if text is None:
        return None
    lines = text.rstrip("\n").split("\n")
    clipped = "\n".join(lines[-TRACEBACK_MAX_LINES:])
    if len(clipped) > TRACEBACK_MAX_CHARS:
        clipped = clipped[-TRACEBACK_MAX_CHARS:]
        clipped = clipped[clipped.find("\n") + 1 :] if "\n" in clipped else clipped
    if clipped != text.rstrip("\n"):
        clipped = "...\n" + clipped
    return clipped


def _clip_error(text: Optional[str]) -> Optional[str]:
    if text is None or len(text) <= ERROR_MAX_CHARS:
        return text
    return text[: ERROR_MAX_CHARS - 3] + "..."


def _finished(run: JobRun, now: float) -> JobRun:
    """``run`` as stored when it ends: ``finished``/``duration`` filled in, texts clipped."""
    if run.outcome == "running":
        raise ValueError(
            f"finish_run({run.run_id!r}) needs the run's outcome (completed, failed, "
            "abandoned or timed_out), not 'running'; call start_run for a run that starts"
        )
    if (
        run.finished is not None
        and run.duration is not None
        and run.error is None
        and run.traceback is None
    ):
        return run  # a success as the core records it: nothing to fill in or clip
    finished = run.finished if run.finished is not None else utc_datetime(now)
    duration = run.duration
    if duration is None:
        duration = max(0.0, (finished - run.started).total_seconds())
    return evolve(
        run,
        finished=finished,
        duration=duration,
        error=_clip_error(run.error),
        traceback=clip_traceback(run.traceback),
    )


def _count_finished(record: JobRecord, run: JobRun) -> JobRecord:
    """``record`` after ``run`` (finished) is counted: the one rule for both stores."""
    failed = run.outcome in FAILED_OUTCOMES
    duration = run.duration or 0.0
    last_success, last_failure, last_error = (
        record.last_success,
        record.last_failure,
        record.last_error,
    )
    if failed:
        if last_failure is None or run.started >= last_failure:
            last_failure, last_error = run.started, run.error
    elif last_success is None or run.started >= last_success:
        last_success = run.started
    return evolve(
        record,
        runs=record.runs + 1,
        failures=record.failures + int(failed),
        total_duration=record.total_duration + duration,
        last_run=_latest(record.last_run, run.started),
        last_success=last_success,
        last_failure=last_failure,
        last_error=last_error,
        last_duration=duration,
        last_outcome=run.outcome,
    )


def _abandoned(run: JobRun, now: float) -> JobRun:
    who = f"process {run.pid}" + (f" on {run.host}" if run.host else "")
    return _finished(
        evolve(
            run,
            outcome="abandoned",
            finished=utc_datetime(now),
            duration=None,
            error=f"abandoned: {who} died while the run was in progress",
        ),
        now,
    )


# -- the interface --------------------------------------------------------------------------


class FireClaim:
    """A claim of one scheduled fire, made ahead of it (:meth:`StateStore.claim_fire_ahead`)."""

    __slots__ = ("job_id", "scheduled_for")

    def __init__(self, job_id: str, scheduled_for: datetime) -> None:
        self.job_id = job_id
        self.scheduled_for = scheduled_for

    def won(self, timeout: Optional[float] = None) -> Optional[bool]:
        """Whether this process may run the fire; ``None`` if the store could not say
        (degraded, or no answer within ``timeout``). Waits for the answer if need be."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<FireClaim {self.job_id!r} {self.scheduled_for.isoformat()}>"


class _DecidedClaim(FireClaim):
    __slots__ = ("_won",)

    def __init__(self, job_id: str, scheduled_for: datetime, won: Optional[bool]) -> None:
        super().__init__(job_id, scheduled_for)
        self._won = won

    def won(self, timeout: Optional[float] = None) -> Optional[bool]:
        return self._won


class _LazyClaim(FireClaim):
    __slots__ = ("_store",)

    def __init__(self, store: StateStore, job_id: str, scheduled_for: datetime) -> None:
        super().__init__(job_id, scheduled_for)
        self._store = store

    def won(self, timeout: Optional[float] = None) -> Optional[bool]:
        return self._store.claim_fire(self.job_id, self.scheduled_for)


class StateStore(abc.ABC):
    """Run history and host-wide job state. Every method is thread-safe and never raises
    for a broken store (see the module docstring); wrong arguments raise ``ValueError``.
    """

    path: str
    """Where the store lives, for messages (``":memory:"`` for :class:`MemoryStore`)."""

    @property
    def degraded(self) -> Optional[str]:
        """Why the store is unusable right now and what fixes it; ``None`` when healthy."""
        return None

    @property
    def dropped_writes(self) -> int:
        """Writes dropped because the store was degraded or closed (kept in memory only)."""
        return 0

    @abc.abstractmethod
    def start_run(self, run: JobRun) -> None:
        """Record a run that started (outcome ``running``); the job's ``running_pid`` and
        ``last_run`` follow. Recording the same ``run_id`` again changes nothing."""

    @abc.abstractmethod
    def finish_run(self, run: JobRun) -> None:
        """Record how a run ended and count it, in one transaction.

        ``finished``/``duration`` default to now; the traceback keeps its last lines. A run
        that was never started is recorded whole; a run already finished (say, abandoned)
        is left as it is and not counted twice.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> Optional[JobRun]:
        """One run, or ``None`` if unknown (or pruned)."""

    @abc.abstractmethod
    def job_runs(self, job_id: str, limit: int = 20) -> List[JobRun]:
        """A job's runs, newest first (by start time), at most ``limit``."""

    @abc.abstractmethod
    def claim_fire(self, job_id: str, scheduled_for: datetime) -> bool:
        """``True`` for exactly one caller per ``(job_id, scheduled_for)`` on the host."""

    def claim_fire_ahead(self, job_id: str, scheduled_for: datetime) -> FireClaim:
        """Start claiming a fire before it is due; the answer is asked for at the fire.

        The process that leads a job's schedule claims its next fire when it arms the
        timer, an interval ahead, so a store that writes behind commits the claim with
        other records instead of in a transaction of its own on the fire's path. This
        default claims nothing ahead: :meth:`FireClaim.won` calls :meth:`claim_fire`.
        """
        return _LazyClaim(self, job_id, scheduled_for)

    def retake_fire(self, job_id: str, scheduled_for: datetime) -> bool:
        """Claim a fire claimed ahead by a process that no longer leads the job: ``True``
        unless a run of that fire is on record. Only the process now leading the job's
        schedule calls this, for a fire it armed after it took the lead, so the claim's
        holder never ran it (see ``bgjobs._local.leadership``). This default never takes
        a claim over."""
        return False

    def record_abandoned_fire(self, run: JobRun) -> bool:
        """Record ``run``, an abandoned scheduled run whose start never reached the store
        (its process was killed at once), unless a run of the same fire is on record;
        ``True`` if recorded. The default records it when :meth:`job_runs` shows no run
        of that fire."""
        if any(r.scheduled_for == run.scheduled_for for r in self.job_runs(run.job_id, 1000)):
            return False
        self.finish_run(run)
        return True

    @abc.abstractmethod
    def claim_key(self, key: str, run_id: str) -> Optional[str]:
        """Claim an idempotency key: ``None`` if this caller now owns it (recorded with
        ``run_id``), else the run id recorded by the caller that owned it first."""

    @abc.abstractmethod
    def release_key(self, key: str, run_id: str) -> None:
        """Give up a key claimed with ``run_id`` whose run never started (the job was
        busy), so a retry with the same key can run it; someone else's claim stays."""

    @abc.abstractmethod
    def record_skips(self, job_id: str, count: int = 1) -> None:
        """Add ``count`` run attempts refused because the job was still running."""

    @abc.abstractmethod
    def set_next_run(self, job_id: str, when: Optional[datetime]) -> None:
        """Announce the job's next fire time (``None``: nothing scheduled)."""

    @abc.abstractmethod
    def set_paused(self, job_id: str, paused: bool) -> None:
        """Pause or resume the job for every process; it survives restarts."""

    @abc.abstractmethod
    def job(self, job_id: str) -> Optional[JobRecord]:
        """The job's record, or ``None`` if the store has never heard of it."""

    @abc.abstractmethod
    def jobs(self) -> Dict[str, JobRecord]:
        """Every job's record, by id."""

    @abc.abstractmethod
    def paused_jobs(self) -> Set[str]:
        """The ids of the paused jobs (cheap: read on every scheduled fire's path)."""

    @abc.abstractmethod
    def totals(self) -> Tuple[int, int, int, float]:
        """``(runs, failures, skips, total duration in seconds)`` over every job."""

    @abc.abstractmethod
    def abandon_dead_runs(self, is_alive: Callable[[str, int], bool]) -> List[JobRun]:
        """Mark ``abandoned`` (finished now, counted as failures) the runs still
        ``running`` for which ``is_alive(host, pid)`` is false, and return them.

        ``is_alive`` is called without any lock held.
        """

    @abc.abstractmethod
    def prune(self, now: Optional[datetime] = None) -> None:
        """Apply retention: runs beyond ``keep_runs`` per job or older than ``max_age``
        (never one still running); keys and fire claims older than ``key_ttl``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store; idempotent. Later writes are dropped (and counted)."""

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every write made before this call is stored (a store may write run
        records behind, in batches); ``False`` if that took longer than ``timeout``."""
        return True

    def reinit_after_fork(self) -> None:  # noqa: B027 - a hook; most stores need nothing
        """In a forked child: forget the parent's connections and locks (not closing
        them) so the next call reconnects. The default has nothing to forget."""

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_retention(
    keep_runs: int, max_age: timedelta, key_ttl: timedelta
) -> Tuple[int, float, float]:
    if not isinstance(keep_runs, int) or keep_runs < 1:
        raise ValueError(f"keep_runs must be an int >= 1 (runs kept per job), got {keep_runs!r}")
    if max_age <= timedelta(0):
        raise ValueError(f"max_age must be a positive timedelta, got {max_age!r}")
    if key_ttl < DEFAULT_KEY_TTL:
        raise ValueError(
            f"key_ttl must be at least 24 hours (idempotency keys are honoured that long), "
            f"got {key_ttl!r}"
        )
    return keep_runs, max_age.total_seconds(), key_ttl.total_seconds()


# -- in memory ------------------------------------------------------------------------------


class MemoryStore(StateStore):
    """The store in this process's memory: same rules, nothing shared, nothing kept.

    Used when the state directory is off, by tests, and by :class:`SQLiteStore` to answer
    claims while its file is unusable.
    """

    def __init__(
        self,
        *,
        keep_runs: int = DEFAULT_KEEP_RUNS,
        max_age: timedelta = DEFAULT_MAX_AGE,
        key_ttl: timedelta = DEFAULT_KEY_TTL,
        clock: Optional[Clock] = None,
    ) -> None:
        self.path = ":memory:"
        self._keep_runs, self._max_age, self._key_ttl = _check_retention(
            keep_runs, max_age, key_ttl
        )
        self._clock: Clock = clock or SystemClock()
        # Guards every dict below; held only for dict work, never across a callback.
        self._state_lock = threading.Lock()
        self._jobs: Dict[str, JobRecord] = {}
        self._runs: Dict[str, JobRun] = {}
        self._runs_by_job: Dict[str, Dict[str, JobRun]] = {}  # oldest first
        self._running_by_job: Dict[str, Dict[str, JobRun]] = {}
        self._pruned_at = self._clock.time()
        self._fires: Dict[Tuple[str, float], float] = {}  # (job, due) -> claimed at
        self._keys: Dict[str, Tuple[str, float]] = {}  # key -> (run id, claimed at)

    def _record(self, job_id: str) -> JobRecord:
        return self._jobs.get(job_id) or JobRecord(job_id)

    def _put_run(self, run: JobRun) -> None:
        self._runs[run.run_id] = run
        runs = self._runs_by_job.setdefault(run.job_id, {})
        runs[run.run_id] = run
        going = self._running_by_job.setdefault(run.job_id, {})
        if run.outcome == "running":
            going[run.run_id] = run
            return
        going.pop(run.run_id, None)
        # Keep at most keep_runs per job as runs end (oldest first out; never one still
        # going), so a long-lived process neither grows nor slows down.
        while len(runs) > self._keep_runs:
            oldest = next(iter(runs))
            if oldest in going:
                break
            del runs[oldest]
            self._runs.pop(oldest, None)

    def _with_running(self, record: JobRecord) -> JobRecord:
        going = self._running_by_job.get(record.job_id, {}).values()
        newest = max(going, key=lambda r: r.started, default=None)
        return evolve(
            record,
            running_pid=newest.pid if newest else None,
            running_host=newest.host if newest else None,
        )

    def start_run(self, run: JobRun) -> None:
        _ts(run.started)
        with self._state_lock:
            if run.run_id in self._runs:
                return
            self._put_run(evolve(run, outcome="running", finished=None, duration=None))
            record = self._record(run.job_id)
            self._jobs[run.job_id] = evolve(
                record,
                last_run=_latest(record.last_run, run.started),
                running_pid=run.pid,
                running_host=run.host,
            )

    def finish_run(self, run: JobRun) -> None:
        now = self._clock.time()
        done = _finished(run, now)
        with self._state_lock:
            self._finish_locked(done)
        if now - self._pruned_at >= PRUNE_INTERVAL:  # ages and keys; counts are kept above
            self._pruned_at = now
            self.prune()

    def _finish_locked(self, done: JobRun) -> bool:
        known = self._runs.get(done.run_id)
        if known is not None and known.outcome != "running":
            return False
        self._put_run(done)
        self._jobs[done.job_id] = self._with_running(
            _count_finished(self._record(done.job_id), done)
        )
        return True

    def get_run(self, run_id: str) -> Optional[JobRun]:
        with self._state_lock:
            return self._runs.get(run_id)

    def job_runs(self, job_id: str, limit: int = 20) -> List[JobRun]:
        with self._state_lock:
            runs = list(self._runs_by_job.get(job_id, {}).values())
        runs.sort(key=lambda r: r.started, reverse=True)
        return runs[: max(0, limit)]

    def claim_fire(self, job_id: str, scheduled_for: datetime) -> bool:
        key = (job_id, _ts(scheduled_for))
        with self._state_lock:
            if key in self._fires:
                return False
            self._fires[key] = self._clock.time()
            return True

    def claim_fire_ahead(self, job_id: str, scheduled_for: datetime) -> FireClaim:
        return _DecidedClaim(job_id, scheduled_for, self.claim_fire(job_id, scheduled_for))

    def retake_fire(self, job_id: str, scheduled_for: datetime) -> bool:
        with self._state_lock:
            if self._has_run_of(job_id, scheduled_for):
                return False
            self._fires[(job_id, _ts(scheduled_for))] = self._clock.time()
            return True

    def record_abandoned_fire(self, run: JobRun) -> bool:
        with self._state_lock:
            if run.scheduled_for is None or self._has_run_of(run.job_id, run.scheduled_for):
                return False
            return self._finish_locked(_finished(run, self._clock.time()))

    def _has_run_of(self, job_id: str, scheduled_for: datetime) -> bool:
        """Caller holds ``_state_lock``."""
        runs = self._runs_by_job.get(job_id, {}).values()
        return any(run.scheduled_for == scheduled_for for run in runs)

    def claim_key(self, key: str, run_id: str) -> Optional[str]:
        with self._state_lock:
            known = self._keys.get(key)
            if known is not None:
                return known[0]
            self._keys[key] = (run_id, self._clock.time())
            return None

    def release_key(self, key: str, run_id: str) -> None:
        with self._state_lock:
            known = self._keys.get(key)
            if known is not None and known[0] == run_id:
                del self._keys[key]

    def record_skips(self, job_id: str, count: int = 1) -> None:
        with self._state_lock:
            record = self._record(job_id)
            self._jobs[job_id] = evolve(record, skips=record.skips + count)

    def set_next_run(self, job_id: str, when: Optional[datetime]) -> None:
        _opt_ts(when)
        with self._state_lock:
            self._jobs[job_id] = evolve(self._record(job_id), next_run=when)

    def set_paused(self, job_id: str, paused: bool) -> None:
        with self._state_lock:
            self._jobs[job_id] = evolve(self._record(job_id), paused=bool(paused))

    def job(self, job_id: str) -> Optional[JobRecord]:
        with self._state_lock:
            return self._jobs.get(job_id)

    def jobs(self) -> Dict[str, JobRecord]:
        with self._state_lock:
            return dict(self._jobs)

    def paused_jobs(self) -> Set[str]:
        with self._state_lock:
            return {job_id for job_id, record in self._jobs.items() if record.paused}

    def totals(self) -> Tuple[int, int, int, float]:
        with self._state_lock:
            records = list(self._jobs.values())
        return (
            sum(r.runs for r in records),
            sum(r.failures for r in records),
            sum(r.skips for r in records),
            sum(r.total_duration for r in records),
        )

    def abandon_dead_runs(self, is_alive: Callable[[str, int], bool]) -> List[JobRun]:
        with self._state_lock:
            going = [r for r in self._runs.values() if r.outcome == "running"]
        dead = [r for r in going if not is_alive(r.host, r.pid)]
        now = self._clock.time()
        ended = [_abandoned(run, now) for run in dead]
        with self._state_lock:
            return [run for run in ended if self._finish_locked(run)]

    def prune(self, now: Optional[datetime] = None) -> None:
        at = self._clock.time() if now is None else _ts(now)
        with self._state_lock:
            for runs in self._runs_by_job.values():
                newest = sorted(runs.values(), key=lambda r: r.started, reverse=True)
                for index, run in enumerate(newest):
                    too_old = run.started.timestamp() < at - self._max_age
                    if run.outcome != "running" and (index >= self._keep_runs or too_old):
                        del runs[run.run_id]
                        self._runs.pop(run.run_id, None)
            cutoff = at - self._key_ttl
            self._fires = {k: t for k, t in self._fires.items() if t >= cutoff}
            self._keys = {k: v for k, v in self._keys.items() if v[1] >= cutoff}

    def close(self) -> None:
        """Nothing to release: the memory is the store."""

    def reinit_after_fork(self) -> None:
        """A fresh lock: the parent's may have been held by a thread that does not exist
        in the child. The data is the parent's, copied."""
        self._state_lock = threading.Lock()


# -- SQLite ---------------------------------------------------------------------------------


class _StoreFault(Exception):
    """Why the store cannot be used now: ``condition`` keys the once-only WARNING."""

    def __init__(self, condition: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.condition, self.problem, self.fix = condition, problem, fix


# Held by every thread inside SQLite, and taken across fork() by the hooks below: SQLite's
# own mutexes (its allocator's, its file locks' bookkeeping) are process-wide, so a child
# forked while another thread was inside SQLite could deadlock in its first SQLite call.
# Reentrant, taken after a store's _conn_lock; replaced in the child.
_inside_sqlite = threading.RLock()


def _before_fork() -> None:
    _inside_sqlite.acquire()


def _after_fork_in_parent() -> None:
    _inside_sqlite.release()


def _after_fork_in_child() -> None:
    global _inside_sqlite
    _inside_sqlite = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


_PROGRAMMING_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.NotSupportedError,
    sqlite3.DataError,
)


class SQLiteStore(StateStore):
    """The store in a SQLite file shared by every process of the host (``state.db``).

    One connection per process, opened lazily and reopened after a fault or a fork;
    ``retry_interval`` seconds pass between attempts while the store is degraded, so a
    locked file costs at most one ``busy_timeout`` per interval, not one per call.
    """

    def __init__(
        self,
        path: PathArg,
        *,
        keep_runs: int = DEFAULT_KEEP_RUNS,
        max_age: timedelta = DEFAULT_MAX_AGE,
        key_ttl: timedelta = DEFAULT_KEY_TTL,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        clock: Optional[Clock] = None,
        write_behind: bool = False,
    ) -> None:
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._keep_runs, self._max_age, self._key_ttl = _check_retention(
            keep_runs, max_age, key_ttl
        )
        if busy_timeout < 0 or retry_interval < 0:
            raise ValueError(
                f"busy_timeout and retry_interval are seconds >= 0, got {busy_timeout!r} "
                f"and {retry_interval!r}"
            )
        self._busy_timeout = float(busy_timeout)
        self._retry_interval = float(retry_interval)
        self._clock: Clock = clock or SystemClock()
        # Answers claim_fire/claim_key while the file is unusable (this process only).
        self._fallback = MemoryStore(
            keep_runs=keep_runs, max_age=max_age, key_ttl=key_ttl, clock=clock
        )
        self._pid = os.getpid()
        # Guards the connection and every field below it: one SQLite connection must not
        # be used by two threads at once, and the degraded state changes with its use.
        self._conn_lock = threading.Lock()
        self._conn: Optional[sqlite3.Connection] = None
        self._identity: Optional[Tuple[int, int]] = None  # (st_dev, st_ino) of the open file
        self._degraded: Optional[str] = None
        self._failed_write = False  # whether a write (not just a read) met the fault
        self._warned: Set[str] = set()  # conditions already logged at WARNING
        self._retry_at = 0.0  # monotonic time of the next attempt while degraded
        self._dropped = 0
        self._dropped_before = 0  # self._dropped when the current degradation began
        self._next_prune = 0.0  # wall time of the next automatic prune
        self._next_claim_prune = 0.0  # wall time of the next prune of expired fire claims
        self._closed = False
        # Connections inherited through fork: kept referenced, never closed (see
        # reinit_after_fork).
        self._inherited: List[sqlite3.Connection] = []
        # With write_behind, scheduled runs' records go through one writer thread, in
        # batches (see _group_commit); without, each write is its caller's transaction.
        self._writes = GroupCommit(
            self._commit_batch, wait_timeout=self._busy_timeout + 5.0, behind=write_behind
        )
        self._call(lambda conn: None, None, write=False)  # report a problem at startup

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    def __del__(self) -> None:
        # A store dropped without close() has its connection closed here, inside the fork
        # guard: left to the garbage collector, SQLite would close it in whichever thread
        # collects, holding SQLite's process-wide mutexes, and a fork at that instant would
        # leave a child that hangs in its first SQLite call.
        conn = getattr(self, "_conn", None)
        if conn is None or getattr(self, "_pid", None) != os.getpid():
            return
        guard = _inside_sqlite
        if guard is None:  # pragma: no cover - module globals cleared at interpreter exit
            return
        with guard:
            _close_quietly(conn)

    # -- state ---------------------------------------------------------------------------

    @property
    def degraded(self) -> Optional[str]:
        if self._closed:
            return f"state store {self.path} is closed"
        return self._degraded

    @property
    def dropped_writes(self) -> int:
        return self._dropped

    def close(self) -> None:
        self._writes.close()  # what was queued is written first
        with self._conn_lock, _inside_sqlite:
            self._closed = True
            self._discard()

    def reinit_after_fork(self) -> None:
        """Forget the parent's connection without closing it: closing it here could
        checkpoint or delete the WAL under the parent, and SQLite forbids using a
        connection across ``fork``. The next call opens a connection of our own."""
        if self._conn is not None:
            self._inherited.append(self._conn)
        self._conn = None
        self._identity = None
        self._conn_lock = threading.Lock()
        self._retry_at = 0.0
        self._pid = os.getpid()
        self._writes.reinit_after_fork()
        self._fallback.reinit_after_fork()

    # -- the operations ------------------------------------------------------------------

    def start_run(self, run: JobRun) -> None:
        write = _Write("start", run)
        if run.trigger == "schedule":
            # Behind, like its end: a transaction on every fire's path cost the pool more
            # than the run. A leader killed before the writer's next batch leaves no start
            # on record; its successor records that fire as abandoned from the schedule
            # record (see record_abandoned_fire).
            self._writes.submit(write)
        else:
            # Someone may ask for the run while it goes (a 202's Location, from any worker).
            self._writes.write_now(write)

    def finish_run(self, run: JobRun) -> None:
        write = _Write("finish", _finished(run, self._clock.time()))
        if run.trigger == "schedule":
            self._writes.submit(write)  # behind: the timers' throughput matters here
        else:
            # Someone is waiting for this run's answer (an HTTP dispatch, a retry with the
            # same Idempotency-Key, the CLI): it is on record before they get it.
            self._writes.call(write)

    def get_run(self, run_id: str) -> Optional[JobRun]:
        self._writes.flush()

        def op(conn: sqlite3.Connection) -> Optional[JobRun]:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return None if row is None else _run_from_row(row)

        return self._call(op, None, write=False)

    def job_runs(self, job_id: str, limit: int = 20) -> List[JobRun]:
        self._writes.flush()

        def op(conn: sqlite3.Connection) -> List[JobRun]:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE job_id = ? ORDER BY started DESC LIMIT ?",
                (job_id, max(0, limit)),
            ).fetchall()
            return [_run_from_row(row) for row in rows]

        return self._call(op, [], write=False)

    def claim_fire(self, job_id: str, scheduled_for: datetime) -> bool:
        due = _ts(scheduled_for)

        def apply(conn: sqlite3.Connection) -> bool:
            # The unique key picks the winner; the answer counts once the batch commits.
            cur = conn.execute(
                "INSERT OR IGNORE INTO fires (job_id, scheduled_for, claimed) VALUES (?, ?, ?)",
                (job_id, due, self._clock.time()),
            )
            return cur.rowcount == 1

        won = self._call(apply, None, write=False)  # a claim is not a run record
        return self._fallback.claim_fire(job_id, scheduled_for) if won is None else won

    def claim_fire_ahead(self, job_id: str, scheduled_for: datetime) -> FireClaim:
        if not self._writes.behind:
            return _DecidedClaim(job_id, scheduled_for, self.claim_fire(job_id, scheduled_for))
        due = _ts(scheduled_for)
        now = self._clock.time()
        write = _Write("claim", (job_id, due, self._schedule_claim_mark(due, now)), record=False)
        # A fire further ahead than the writer gathers finds its claim committed with the
        # next batch. A nearer one (a job every 20 ms) would find it still gathering and
        # wait for its commit: it is committed halfway to its fire instead, between this
        # fire and that one (not now: a commit now slows the fire under way by as much).
        ahead = due - now
        if ahead < CLAIM_HURRY_AHEAD:
            self._writes.submit(write, urgent=False, within=max(0.0, ahead / 2))
        else:
            self._writes.submit(write, urgent=False)
        return _QueuedClaim(self, write, job_id, scheduled_for)

    def _schedule_claim_mark(self, due: float, now: Optional[float] = None) -> float:
        """The ``claimed`` value of a schedule's claim: the claims table keeps a row while
        ``claimed`` is within ``key_ttl`` of now, so this keeps one until
        :data:`SCHEDULE_CLAIM_TTL` after its due time (or after now, for a fire already
        late) without a column of its own, which every bgjobs sharing the file prunes alike."""
        return max(due, self._clock.time() if now is None else now) + (
            SCHEDULE_CLAIM_TTL - self._key_ttl
        )

    def retake_fire(self, job_id: str, scheduled_for: datetime) -> bool:
        due = _ts(scheduled_for)

        def op(conn: sqlite3.Connection) -> bool:
            with _WriteTransaction(conn):
                if _has_run_of(conn, job_id, due):
                    return False
                conn.execute(
                    "INSERT INTO fires (job_id, scheduled_for, claimed) VALUES (?, ?, ?) "
                    "ON CONFLICT (job_id, scheduled_for) DO UPDATE SET claimed = excluded.claimed",
                    (job_id, due, self._schedule_claim_mark(due)),
                )
                return True

        self._writes.flush()  # this process's own start of that fire, if any, counts
        won = self._call(op, None, write=False)
        return self._fallback.claim_fire(job_id, scheduled_for) if won is None else won

    def record_abandoned_fire(self, run: JobRun) -> bool:
        done = _finished(run, self._clock.time())
        if done.scheduled_for is None:
            return False
        due = _ts(done.scheduled_for)

        def op(conn: sqlite3.Connection) -> bool:
            with _WriteTransaction(conn):
                if _has_run_of(conn, done.job_id, due):
                    return False
                _BatchRows([_Write("finish", done)]).write(conn)
                return True

        self._writes.flush()
        return bool(self._call(op, False, write=True))

    def claim_key(self, key: str, run_id: str) -> Optional[str]:
        def op(conn: sqlite3.Connection) -> Tuple[bool, Optional[str]]:
            with _WriteTransaction(conn):
                cur = conn.execute(
                    "INSERT OR IGNORE INTO idempotency_keys (key, run_id, claimed) "
                    "VALUES (?, ?, ?)",
                    (key, run_id, self._clock.time()),
                )
                if cur.rowcount == 1:
                    return True, None
                row = conn.execute(
                    "SELECT run_id FROM idempotency_keys WHERE key = ?", (key,)
                ).fetchone()
                return True, str(row[0])

        unanswered: Tuple[bool, Optional[str]] = (False, None)
        answered, owner = self._call(op, unanswered, write=False)
        return owner if answered else self._fallback.claim_key(key, run_id)

    def release_key(self, key: str, run_id: str) -> None:
        self._fallback.release_key(key, run_id)
        self._execute("DELETE FROM idempotency_keys WHERE key = ? AND run_id = ?", (key, run_id))

    def record_skips(self, job_id: str, count: int = 1) -> None:
        self._writes.submit(_Write("skips", (job_id, int(count))))

    def set_next_run(self, job_id: str, when: Optional[datetime]) -> None:
        self._execute(
            "INSERT INTO jobs (job_id, next_run) VALUES (?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET next_run = excluded.next_run",
            (job_id, _opt_ts(when)),
        )

    def set_paused(self, job_id: str, paused: bool) -> None:
        self._execute(
            "INSERT INTO jobs (job_id, paused) VALUES (?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET paused = excluded.paused",
            (job_id, int(bool(paused))),
        )

    def job(self, job_id: str) -> Optional[JobRecord]:
        self._writes.flush()

        def op(conn: sqlite3.Connection) -> Optional[JobRecord]:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            return None if row is None else _job_from_row(row)

        return self._call(op, None, write=False)

    def jobs(self) -> Dict[str, JobRecord]:
        self._writes.flush()

        def op(conn: sqlite3.Connection) -> Dict[str, JobRecord]:
            rows = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs").fetchall()
            return {row[0]: _job_from_row(row) for row in rows}

        return self._call(op, {}, write=False)

    def paused_jobs(self) -> Set[str]:
        def op(conn: sqlite3.Connection) -> Set[str]:
            rows = conn.execute("SELECT job_id FROM jobs WHERE paused = 1").fetchall()
            return {str(row[0]) for row in rows}

        return self._call(op, set(), write=False)

    def totals(self) -> Tuple[int, int, int, float]:
        self._writes.flush()

        def op(conn: sqlite3.Connection) -> Tuple[int, int, int, float]:
            row = conn.execute(
                "SELECT coalesce(sum(runs), 0), coalesce(sum(failures), 0), "
                "coalesce(sum(skips), 0), coalesce(sum(total_duration), 0.0) FROM jobs"
            ).fetchone()
            return int(row[0]), int(row[1]), int(row[2]), float(row[3])

        return self._call(op, (0, 0, 0, 0.0), write=False)

    def abandon_dead_runs(self, is_alive: Callable[[str, int], bool]) -> List[JobRun]:
        self._writes.flush()

        def running(conn: sqlite3.Connection) -> List[JobRun]:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE outcome = 'running'"
            ).fetchall()
            return [_run_from_row(row) for row in rows]

        none: List[JobRun] = []
        dead = [
            run for run in self._call(running, none, write=False) if not is_alive(run.host, run.pid)
        ]
        if not dead:
            return []
        now = self._clock.time()
        ended = [_abandoned(run, now) for run in dead]

        def op(conn: sqlite3.Connection) -> List[JobRun]:
            with _WriteTransaction(conn):
                return [r for r in ended if _abandon_in_transaction(conn, r)]

        return self._call(op, [], write=True)

    def prune(self, now: Optional[datetime] = None) -> None:
        at = self._clock.time() if now is None else _ts(now)
        self._writes.flush()
        self._call(lambda conn: self._prune_now(conn, at), None, write=True)

    def _prune_now(self, conn: sqlite3.Connection, now: float) -> None:
        """Retention, in one transaction. Caller holds ``_conn_lock``."""
        with _WriteTransaction(conn):
            conn.execute(
                "DELETE FROM runs WHERE outcome != 'running' AND started < ?",
                (now - self._max_age,),
            )
            crowded = conn.execute(
                "SELECT job_id FROM runs GROUP BY job_id HAVING count(*) > ?", (self._keep_runs,)
            ).fetchall()
            for (job_id,) in crowded:
                conn.execute(
                    "DELETE FROM runs WHERE job_id = ? AND outcome != 'running' AND run_id NOT IN "
                    "(SELECT run_id FROM runs WHERE job_id = ? ORDER BY started DESC LIMIT ?)",
                    (job_id, job_id, self._keep_runs),
                )
            cutoff = now - self._key_ttl
            conn.execute("DELETE FROM fires WHERE claimed < ?", (cutoff,))
            conn.execute("DELETE FROM idempotency_keys WHERE claimed < ?", (cutoff,))
        self._next_prune = now + PRUNE_INTERVAL

    def _execute(self, sql: str, params: Sequence[object]) -> None:
        """One write statement (its own transaction)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        self._call(op, None, write=True)

    # -- connection and faults -----------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until the writes this process queued before now are in the file (or
        dropped, if it is unusable); ``False`` if that took longer than ``timeout``."""
        return self._writes.flush(timeout)

    def _commit_batch(self, batch: List[_Write]) -> bool:
        """The writer's pass: ``batch`` in one transaction, then a prune if due.

        A batch is a handful of multi-row statements however many runs it holds: every
        statement releases the GIL, and a transaction whose thread waits to get it back
        holds the file's write lock meanwhile, so fewer statements mean a shorter hold.
        """
        records = sum(1 for w in batch if w.record)
        rows = _BatchRows(batch)

        def op(conn: sqlite3.Connection) -> bool:
            with _WriteTransaction(conn):
                rows.write(conn)
            now = self._clock.time()
            if now >= self._next_prune:
                try:
                    self._prune_now(conn, now)
                except sqlite3.OperationalError as exc:  # the runs are recorded: not a drop
                    logger.debug("state store %s: prune postponed (%s)", self.path, exc)
                    self._next_prune = now + 60.0
            elif now >= self._next_claim_prune:
                try:
                    with _WriteTransaction(conn):  # the index on claimed finds them
                        conn.execute("DELETE FROM fires WHERE claimed < ?", (now - self._key_ttl,))
                except sqlite3.OperationalError as exc:
                    logger.debug("state store %s: prune postponed (%s)", self.path, exc)
                self._next_claim_prune = now + CLAIM_PRUNE_INTERVAL
            return True

        return self._call(op, False, write=records > 0, count=records)

    def _call(
        self,
        op: Callable[[sqlite3.Connection], _T],
        fallback: _T,
        *,
        write: bool,
        count: int = 1,
    ) -> _T:
        """Run ``op`` on the connection; on a fault degrade and return ``fallback``.

        ``write``: a dropped call loses ``count`` records, counted in ``dropped_writes``.
        Log records are emitted after the lock is released (a handler may be slow).
        """
        if self._pid != os.getpid():
            self.reinit_after_fork()
        logs: List[Tuple[int, str]] = []
        try:
            with self._conn_lock, _inside_sqlite:
                return self._call_locked(op, fallback, write, logs, count)
        finally:
            for level, message in logs:
                logger.log(level, "%s", message)

    def _call_locked(
        self,
        op: Callable[[sqlite3.Connection], _T],
        fallback: _T,
        write: bool,
        logs: List[Tuple[int, str]],
        count: int = 1,
    ) -> _T:
        if self._closed or (
            self._conn is None
            and self._degraded is not None
            and self._clock.monotonic() < self._retry_at
        ):
            self._dropped += int(write) * count
            return fallback
        for attempt in range(2):
            try:
                if self._conn is None:
                    self._conn = self._open(logs)
                result = op(self._conn)
            except _StoreFault as refused:
                self._discard()
                self._degrade(refused, logs, write)
                break
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, _PROGRAMMING_ERRORS):
                    _rollback_quietly(self._conn)
                    raise
                self._discard()
                fault = self._classify(exc)
                if fault.condition == "corrupt" and attempt == 0 and self._move_aside(exc, logs):
                    continue
                self._degrade(fault, logs, write)
                break
            else:
                self._recovered(logs, write)
                return result
        self._dropped += int(write) * count
        return fallback

    def _connect(self) -> sqlite3.Connection:
        """Open the SQLite connection (tests override this to inject a fault)."""
        return sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,  # autocommit; writes use explicit BEGIN IMMEDIATE
            check_same_thread=False,  # shared by this process's threads under _conn_lock
            cached_statements=64,
        )

    def _open(self, logs: List[Tuple[int, str]]) -> sqlite3.Connection:
        """Check the files, connect, set WAL and migrate. Caller holds ``_conn_lock``."""
        self._check_files()
        # Processes opening a new file together race for the switch to WAL (and its
        # recovery), and SQLite answers some of them "database is locked" at once, without
        # its busy handler: retry the whole opening, on a fresh connection, within the busy
        # timeout, as for every other lock.
        deadline = _time.monotonic() + self._busy_timeout
        pause = 0.001
        while True:
            conn = self._connect()
            try:
                info = os.stat(self.path)
                self._identity = (info.st_dev, info.st_ino)
                version = _schema_version(conn)
                self._refuse_newer(version)
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                conn.execute("PRAGMA synchronous = NORMAL")
                if version < len(MIGRATIONS):
                    self._migrate(conn, logs)
                return conn
            except sqlite3.OperationalError as exc:
                _close_quietly(conn)
                text = str(exc).lower()
                if not ("locked" in text or "busy" in text) or _time.monotonic() >= deadline:
                    raise
            except BaseException:
                _close_quietly(conn)
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _refuse_newer(self, version: int) -> None:
        if version > len(MIGRATIONS):
            raise _StoreFault(
                "newer",
                f"was written by a newer bgjobs (schema version {version}; this one knows "
                f"up to {len(MIGRATIONS)}) and is left untouched",
                "upgrade bgjobs in every process using it, or give this app another "
                "state directory (BGJOBS_STATE_DIR)",
            )

    def _migrate(self, conn: sqlite3.Connection, logs: List[Tuple[int, str]]) -> None:
        with _WriteTransaction(conn):
            version = _schema_version(conn)  # again, under the write lock: another
            self._refuse_newer(version)  # process may have migrated meanwhile
            for statements in MIGRATIONS[version:]:
                for sql in statements:
                    conn.execute(sql)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(len(MIGRATIONS)),),
            )
        if version:
            logs.append(
                (
                    logging.INFO,
                    f"state store {self.path} migrated from schema version {version} to "
                    f"{len(MIGRATIONS)}",
                )
            )

    def _check_files(self) -> None:
        """Refuse files someone else could swap or read through; create ``state.db`` 0600.

        Checked before each connect, since SQLite follows links and opens what it finds.
        """
        directory = os.path.dirname(self.path)
        uid = os.geteuid()
        try:
            dir_info = os.stat(directory)
        except OSError as exc:
            raise _StoreFault(
                "directory",
                f"cannot be created: its directory {directory} is unusable ({exc.strerror})",
                f"create it (mkdir -m 700 {directory}) as uid {uid}, or point BGJOBS_STATE_DIR "
                "at a directory of this app's own",
            ) from None
        if not _may(directory, os.W_OK | os.X_OK):
            raise _StoreFault(
                "directory",
                f"cannot be written: its directory {directory} (owner uid {dir_info.st_uid}, "
                f"mode {stat.S_IMODE(dir_info.st_mode):04o}) is not writable by uid {uid}",
                (
                    f"chmod u+rwx {directory}"
                    if dir_info.st_uid == uid
                    else f"chown {uid} {directory}, or use a state directory of uid {uid}'s own"
                ),
            )
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                info = os.lstat(name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _StoreFault(
                    "unsafe", f"cannot be inspected: {name}: {exc.strerror}", "fix the permissions"
                ) from None
            problem = None
            if stat.S_ISLNK(info.st_mode):
                problem = f"is a symbolic link (to {os.readlink(name)})"
            elif not stat.S_ISREG(info.st_mode):
                problem = "is not a regular file"
            elif info.st_uid != uid:
                problem = f"is owned by uid {info.st_uid}, not by this process's uid {uid}"
            elif info.st_nlink > 1:
                problem = f"has {info.st_nlink} hard links, so it can be changed under another name"
            if problem is not None:
                raise _StoreFault(
                    "unsafe",
                    f"is refused: {name} {problem}",
                    f"remove {name} (bgjobs creates a new one)",
                )
            # SQLite would quietly open it read-only (or fail later); -wal and -shm take
            # the main file's mode when created, so a past chmod can leave them behind.
            if not _may(name, os.R_OK | os.W_OK):
                raise _StoreFault(
                    "readonly",
                    f"is read-only: {name} (mode {stat.S_IMODE(info.st_mode):04o}) cannot be "
                    f"read and written by uid {uid}",
                    f"chmod u+rw {self.path}*",
                )
        try:
            fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600
            )
        except FileExistsError:
            return
        except OSError as exc:
            raise _StoreFault(
                "readonly" if exc.errno == errno.EROFS else "directory",
                f"cannot be created ({exc.strerror})",
                f"make {directory} writable by uid {uid}",
            ) from None
        os.close(fd)

    def _classify(self, exc: sqlite3.DatabaseError) -> _StoreFault:
        message = str(exc)
        text = message.lower()
        uid = os.geteuid()
        directory = os.path.dirname(self.path)
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return _StoreFault(
                "corrupt",
                f"is corrupt ({message}) and could not be moved aside",
                f"move {self.path} away by hand (bgjobs creates a new one)",
            )
        if "locked" in text or "busy" in text:
            return _StoreFault(
                "locked",
                f"is locked by another process for longer than the busy timeout "
                f"({self._busy_timeout:g} s)",
                f"find the process holding it (fuser {self.path}) or raise busy_timeout",
            )
        if "readonly" in text or "read-only" in text:
            return _StoreFault(
                "readonly",
                f"is read-only ({message})",
                f"make it, its -wal and -shm and {directory} writable by uid {uid} "
                f"(chmod u+rw {self.path}*), or remount the filesystem read-write",
            )
        if "full" in text:
            return _StoreFault(
                "full",
                f"cannot grow ({message})",
                f"free space on the filesystem holding {directory}",
            )
        if "unable to open" in text:
            return _StoreFault(
                "cantopen",
                f"cannot be opened ({message})",
                f"check that uid {uid} can read and write {self.path} and {directory}",
            )
        if "i/o" in text:
            return _StoreFault(
                "ioerr",
                f"hit a disk I/O error ({message})",
                "check the disk (dmesg) and the filesystem",
            )
        return _StoreFault("error", f"failed ({type(exc).__name__}: {message})", "see the error")

    def _move_aside(self, exc: sqlite3.DatabaseError, logs: List[Tuple[int, str]]) -> bool:
        """Rename a corrupt ``state.db`` (and its ``-wal``/``-shm``) so a new one can be made.

        Only the very file this process found corrupt: if another process already replaced
        it, reconnecting is enough. Caller holds ``_conn_lock``.
        """
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if self._identity is not None and (info.st_dev, info.st_ino) != self._identity:
            return True
        stamp = utc_datetime(self._clock.time()).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = f"{self.path}.corrupt-{stamp}"
        try:
            for suffix in ("", "-wal", "-shm"):
                if os.path.lexists(self.path + suffix):
                    os.rename(self.path + suffix, aside + suffix)
        except OSError:
            return False
        logs.append(
            (
                logging.WARNING,
                f"state store {self.path} was corrupt ({exc}); moved it aside to {aside} and "
                "started a new one: the run history and counters before now are in that file",
            )
        )
        return True

    def _degrade(self, fault: _StoreFault, logs: List[Tuple[int, str]], write: bool) -> None:
        if self._degraded is None:
            self._dropped_before = self._dropped
        self._failed_write = write
        self._degraded = (
            f"state store {self.path} {fault.problem}: {fault.fix}; run records are kept in "
            "memory only until then"
        )
        self._retry_at = self._clock.monotonic() + self._retry_interval
        if fault.condition not in self._warned:
            self._warned.add(fault.condition)
            logs.append((logging.WARNING, self._degraded))

    def _recovered(self, logs: List[Tuple[int, str]], write: bool) -> None:
        """A call succeeded: healthy again, unless only reads work and a write failed."""
        if self._degraded is None or (self._failed_write and not write):
            return
        dropped = self._dropped - self._dropped_before
        logs.append(
            (
                logging.INFO,
                f"state store {self.path} is usable again; {dropped} write(s) made while it "
                "was not were kept in memory only",
            )
        )
        self._degraded = None
        self._warned.clear()

    def _discard(self) -> None:
        """Close the connection (rolling back). Caller holds ``_conn_lock``."""
        if self._conn is not None:
            _rollback_quietly(self._conn)
            _close_quietly(self._conn)
            self._conn = None


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_EFFECTIVE_IDS = os.access in os.supports_effective_ids


def _may(path: str, mode: int) -> bool:
    """``os.access`` for this process's effective uid (the one that opens files)."""
    return os.access(path, mode, effective_ids=_EFFECTIVE_IDS)


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class _WriteTransaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an exception): the write lock is
    taken up front, so a transaction never fails half-way on a lock upgrade."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            _rollback_quietly(self._conn)


def _rollback_quietly(conn: Optional[sqlite3.Connection]) -> None:
    if conn is not None and conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _close_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()


def _schema_version(conn: sqlite3.Connection) -> int:
    """``meta.schema_version``; 0 for an empty file."""
    has_meta = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()[0]
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _job_from_row(r: Any) -> JobRecord:
    """A ``jobs`` row read as ``_JOB_COLUMNS``, which is JobRecord's field order. SQLite
    already returns int/float/str; only times and the flag need converting (this runs
    1,000 times for a status page, so it is positional and flat)."""
    return JobRecord(
        r[0], r[1], r[2], r[3], r[4], _dt(r[5]), _dt(r[6]), _dt(r[7]),
        r[8], r[9], r[10], r[11], r[12], _dt(r[13]), bool(r[14]),
    )  # fmt: skip


def _run_from_row(row: Any) -> JobRun:
    (run_id, job_id, trigger, scheduled_for, started, finished, duration) = row[:7]
    (outcome, error, traceback, attempt, pid, host) = row[7:]
    return JobRun(
        run_id=str(run_id),
        job_id=str(job_id),
        trigger=trigger,
        started=utc_datetime(started),
        scheduled_for=_dt(scheduled_for),
        finished=_dt(finished),
        duration=duration,
        outcome=outcome,
        error=error,
        traceback=traceback,
        attempt=int(attempt),
        pid=int(pid),
        host=str(host),
    )


def _abandon_in_transaction(conn: sqlite3.Connection, run: JobRun) -> bool:
    """Mark a run still on record as ``running`` finished (abandoned) and count it;
    ``False`` if it finished meanwhile. Caller holds a write transaction."""
    cur = conn.execute(
        "UPDATE runs SET finished = ?, duration = ?, outcome = ?, error = ?, traceback = ? "
        "WHERE run_id = ? AND outcome = 'running'",
        (_opt_ts(run.finished), run.duration, run.outcome, run.error, run.traceback, run.run_id),
    )
    if cur.rowcount == 0:
        return False
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (run.job_id,)
    ).fetchone()
    record = _count_finished(JobRecord(run.job_id) if row is None else _job_from_row(row), run)
    going = conn.execute(
        "SELECT run_id, pid, host FROM runs WHERE job_id = ? AND outcome = 'running' "
        "ORDER BY started DESC LIMIT 1",
        (run.job_id,),
    ).fetchone()
    conn.execute(
        "INSERT INTO jobs (job_id, runs, failures, total_duration, last_run, last_success, "
        "last_failure, last_error, last_duration, last_outcome, running_run_id, running_pid, "
        "running_host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (job_id) DO UPDATE SET runs = excluded.runs, failures = excluded.failures, "
        "total_duration = excluded.total_duration, last_run = excluded.last_run, "
        "last_success = excluded.last_success, last_failure = excluded.last_failure, "
        "last_error = excluded.last_error, last_duration = excluded.last_duration, "
        "last_outcome = excluded.last_outcome, running_run_id = excluded.running_run_id, "
        "running_pid = excluded.running_pid, running_host = excluded.running_host",
        (
            run.job_id,
            record.runs,
            record.failures,
            record.total_duration,
            _opt_ts(record.last_run),
            _opt_ts(record.last_success),
            _opt_ts(record.last_failure),
            record.last_error,
            record.last_duration,
            record.last_outcome,
            going[0] if going else None,
            going[1] if going else None,
            going[2] if going else None,
        ),
    )
    return True


class _QueuedClaim(FireClaim):
    """A claim queued for the writer's next batch."""

    __slots__ = ("_pid", "_store", "_write")

    def __init__(
        self, store: SQLiteStore, write: _Write, job_id: str, scheduled_for: datetime
    ) -> None:
        super().__init__(job_id, scheduled_for)
        self._store = store
        self._write = write
        self._pid = os.getpid()

    def won(self, timeout: Optional[float] = None) -> Optional[bool]:
        store = self._store
        if self._pid != os.getpid():
            return None  # queued in the parent before a fork: the child claims anew
        if not store._writes.wait(self._write, timeout):
            return None
        result = self._write.result
        if result is None:  # not committed (the store is degraded): this process decides
            return store._fallback.claim_fire(self.job_id, self.scheduled_for)
        return bool(result)


def _has_run_of(conn: sqlite3.Connection, job_id: str, scheduled_for: float) -> bool:
    """Whether a run of the fire is on record. Caller holds a transaction."""
    row = conn.execute(
        "SELECT 1 FROM runs WHERE job_id = ? AND scheduled_for = ? LIMIT 1",
        (job_id, scheduled_for),
    ).fetchone()
    return row is not None


class _BatchRows:
    """A batch of run records and skip counts, merged per run and per job before the
    transaction begins (see :meth:`SQLiteStore._commit_batch`)."""

    # Parameters per statement stay under SQLite's oldest limit (999).
    _CHUNK = 60

    def __init__(self, batch: List[_Write]) -> None:
        finishes: Dict[str, JobRun] = {}
        starts: Dict[str, JobRun] = {}
        self.skips: Dict[str, int] = {}
        self.claims: List[_Write] = []
        for w in batch:
            if w.kind == "claim":
                self.claims.append(w)
            elif w.kind == "finish":  # the first finish of a run is its record
                finishes.setdefault(w.payload.run_id, w.payload)
            elif w.kind == "start":
                starts.setdefault(w.payload.run_id, w.payload)
            elif w.kind == "skips":
                job_id, count = w.payload
                self.skips[job_id] = self.skips.get(job_id, 0) + count
            else:  # pragma: no cover - a bug
                raise ValueError(f"unknown write {w.kind!r}")
        self.finishes = list(finishes.values())
        # A start whose finish is in the same batch is not written: the finish is the row.
        self.starts = [run for run_id, run in starts.items() if run_id not in finishes]
        # Finishes of runs started in an earlier batch (or elsewhere): only these may have
        # been finished before (abandoned), or be shown as running in their job's row.
        self.finished_later = [run for run in self.finishes if run.run_id not in starts]

    def write(self, conn: sqlite3.Connection) -> None:
        if self.claims:
            self._write_claims(conn)
        finishes, later = self.finishes, self.finished_later
        if later:
            done = _already_finished(conn, [run.run_id for run in later])
            if done:  # finished before (e.g. abandoned): recorded once, counted once
                finishes = [run for run in finishes if run.run_id not in done]
                later = [run for run in later if run.run_id not in done]
        start_rows = [_run_row(run) for run in self.starts]
        finish_rows = [_run_row(run) for run in finishes]
        runs = start_rows + finish_rows
        for chunk in _chunks(runs, self._CHUNK):
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
                + ", ".join([f"({_marks(13)})"] * len(chunk))
                + " ON CONFLICT (run_id) DO UPDATE SET finished = excluded.finished, "
                "duration = excluded.duration, outcome = excluded.outcome, "
                "error = excluded.error, traceback = excluded.traceback "
                "WHERE runs.outcome = 'running'",
                [value for row in chunk for value in row],
            )
        _write_deltas(conn, _job_deltas(start_rows, finish_rows, self.skips).values())
        # Jobs whose run, shown as running, ended with none started in this batch: show the
        # newest run still going (another process's, or none). A run started and ended in
        # this batch was never shown.
        ended = sorted({run.job_id for run in later} - {run.job_id for run in self.starts})
        for names in _chunks(ended, 500):
            conn.execute(
                "UPDATE jobs SET (running_run_id, running_pid, running_host) = ("
                "SELECT run_id, pid, host FROM runs WHERE runs.job_id = jobs.job_id "
                "AND outcome = 'running' ORDER BY started DESC LIMIT 1) "
                f"WHERE job_id IN ({_marks(len(names))})",
                names,
            )

    def _write_claims(self, conn: sqlite3.Connection) -> None:
        """Insert the batch's fire claims; each claim's ``result`` says whether it won (a
        fire already claimed, or claimed twice in the batch, is lost: the first wins)."""
        if _HAVE_RETURNING:
            self._write_claims_returning(conn)
            return
        keys = [(job_id, due) for job_id, due, _ in (w.payload for w in self.claims)]
        taken: Set[Tuple[str, float]] = set()
        for keys_chunk in _chunks(keys, 400):
            jobs = sorted({job_id for job_id, _ in keys_chunk})
            dues = sorted({due for _, due in keys_chunk})
            rows = conn.execute(
                f"SELECT job_id, scheduled_for FROM fires WHERE job_id IN ({_marks(len(jobs))})"
                f" AND scheduled_for IN ({_marks(len(dues))})",
                [*jobs, *dues],
            ).fetchall()
            taken.update((str(job_id), float(due)) for job_id, due in rows)
        won: List[Tuple[str, float, float]] = []
        for w in self.claims:
            job_id, due, claimed = w.payload
            w.result = (job_id, due) not in taken
            if w.result:
                taken.add((job_id, due))
                won.append((job_id, due, claimed))
        for rows_chunk in _chunks(won, 300):
            conn.execute(
                "INSERT OR IGNORE INTO fires (job_id, scheduled_for, claimed) VALUES "
                + ", ".join(["(?, ?, ?)"] * len(rows_chunk)),
                [value for row in rows_chunk for value in row],
            )

    def _write_claims_returning(self, conn: sqlite3.Connection) -> None:
        """:meth:`_write_claims` in one statement per chunk: the rows inserted are returned,
        and a claim won if its row was (the first of a key in the batch)."""
        first: Dict[Tuple[str, float], _Write] = {}
        for w in self.claims:
            key = (w.payload[0], w.payload[1])
            w.result = False
            first.setdefault(key, w)
        rows = [w.payload for w in first.values()]
        for chunk in _chunks(rows, 300):
            inserted = conn.execute(
                "INSERT OR IGNORE INTO fires (job_id, scheduled_for, claimed) VALUES "
                + ", ".join(["(?, ?, ?)"] * len(chunk))
                + " RETURNING job_id, scheduled_for",
                [value for row in chunk for value in row],
            ).fetchall()
            for job_id, due in inserted:
                first[(str(job_id), float(due))].result = True


# RETURNING came with SQLite 3.35 (2021); older libraries claim with a SELECT first.
_HAVE_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def _chunks(items: List[_T], size: int) -> List[List[_T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _already_finished(conn: sqlite3.Connection, run_ids: List[str]) -> Set[str]:
    done: Set[str] = set()
    for chunk in _chunks(run_ids, 500):
        rows = conn.execute(
            f"SELECT run_id FROM runs WHERE outcome != 'running' AND run_id IN "
            f"({_marks(len(chunk))})",
            chunk,
        ).fetchall()
        done.update(str(row[0]) for row in rows)
    return done


_RunRow = Tuple[
    str, str, str, Optional[float], float, Optional[float], Optional[float],
    str, Optional[str], Optional[str], int, int, str,
]  # fmt: skip
"""A run as the ``runs`` table's columns (:data:`_RUN_COLUMNS`), times as Unix seconds."""
_RUN_ID: Final = 0
_JOB: Final = 1
_STARTED: Final = 4
_DURATION: Final = 6
_OUTCOME: Final = 7
_ERROR: Final = 8
_PID: Final = 11
_HOST: Final = 12


def _run_row(run: JobRun) -> _RunRow:
    return (
        run.run_id,
        run.job_id,
        run.trigger,
        _opt_ts(run.scheduled_for),
        _ts(run.started),
        _opt_ts(run.finished),
        run.duration,
        run.outcome,
        run.error,
        run.traceback,
        run.attempt,
        run.pid,
        run.host,
    )


_DELTA_COLUMNS = (
    "job_id, runs, failures, skips, total_duration, last_run, last_success, last_failure, "
    "last_error, last_duration, last_outcome, running_run_id, running_pid, running_host"
)
# Counters add up; a "last" time moves only forward (CASE, since SQLite's max() of NULL is
# NULL); the running run is set by a start in the batch, else left to the UPDATE after.
_DELTA_UPSERT = """ ON CONFLICT (job_id) DO UPDATE SET
    runs = runs + excluded.runs,
    failures = failures + excluded.failures,
    skips = skips + excluded.skips,
    total_duration = total_duration + excluded.total_duration,
    last_run = CASE WHEN excluded.last_run IS NOT NULL
        AND (last_run IS NULL OR excluded.last_run > last_run)
        THEN excluded.last_run ELSE last_run END,
    last_success = CASE WHEN excluded.last_success IS NOT NULL
        AND (last_success IS NULL OR excluded.last_success >= last_success)
        THEN excluded.last_success ELSE last_success END,
    last_error = CASE WHEN excluded.last_failure IS NOT NULL
        AND (last_failure IS NULL OR excluded.last_failure >= last_failure)
        THEN excluded.last_error ELSE last_error END,
    last_failure = CASE WHEN excluded.last_failure IS NOT NULL
        AND (last_failure IS NULL OR excluded.last_failure >= last_failure)
        THEN excluded.last_failure ELSE last_failure END,
    last_duration = coalesce(excluded.last_duration, last_duration),
    last_outcome = coalesce(excluded.last_outcome, last_outcome),
    running_run_id = coalesce(excluded.running_run_id, running_run_id),
    running_pid = CASE WHEN excluded.running_run_id IS NOT NULL
        THEN excluded.running_pid ELSE running_pid END,
    running_host = CASE WHEN excluded.running_run_id IS NOT NULL
        THEN excluded.running_host ELSE running_host END"""


class _Delta:
    """What one batch adds to one job's row, by :func:`_count_finished`'s rules."""

    __slots__ = (
        "failures",
        "job_id",
        "last_duration",
        "last_error",
        "last_failure",
        "last_outcome",
        "last_run",
        "last_success",
        "running",
        "runs",
        "skips",
        "total_duration",
    )  # fmt: skip

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.runs = self.failures = self.skips = 0
        self.total_duration = 0.0
        self.last_run: Optional[float] = None
        self.last_success: Optional[float] = None
        self.last_failure: Optional[float] = None
        self.last_error: Optional[str] = None
        self.last_duration: Optional[float] = None
        self.last_outcome: Optional[str] = None
        self.running: Optional[_RunRow] = None  # the newest run started and still going

    def started(self, row: _RunRow) -> None:
        started = row[_STARTED]
        self.last_run = _later(self.last_run, started)
        if self.running is None or started >= self.running[_STARTED]:
            self.running = row

    def finished(self, row: _RunRow) -> None:
        started = row[_STARTED]
        outcome, duration = row[_OUTCOME], row[_DURATION]
        failed = outcome in FAILED_OUTCOMES
        self.runs += 1
        self.failures += int(failed)
        self.total_duration += duration or 0.0
        self.last_run = _later(self.last_run, started)
        if failed:
            if self.last_failure is None or started >= self.last_failure:
                self.last_failure, self.last_error = started, row[_ERROR]
        elif self.last_success is None or started >= self.last_success:
            self.last_success = started
        # The batch's order is the finishing order: the last one is the job's last run.
        self.last_duration, self.last_outcome = duration or 0.0, outcome

    def success_row(self) -> Optional[Tuple[object, ...]]:
        """The row for :data:`_SUCCESS_UPSERT`; ``None`` unless this delta is finished
        successes alone."""
        if self.failures or self.skips or self.running is not None or not self.runs:
            return None
        return (
            self.job_id, self.runs, self.total_duration, self.last_run, self.last_success,
            self.last_duration, self.last_outcome,
        )  # fmt: skip

    def row(self) -> Tuple[object, ...]:
        going = self.running
        return (
            self.job_id, self.runs, self.failures, self.skips, self.total_duration,
            self.last_run, self.last_success, self.last_failure, self.last_error,
            self.last_duration, self.last_outcome,
            going[_RUN_ID] if going else None, going[_PID] if going else None,
            going[_HOST] if going else None,
        )  # fmt: skip


_SUCCESS_COLUMNS = (
    "job_id, runs, total_duration, last_run, last_success, last_duration, last_outcome"
)
# _DELTA_UPSERT for a delta of successes alone (no failure, skip or run still going): the
# columns it leaves alone are not sent. Half the cost per row, and most batches are these.
_SUCCESS_UPSERT = """ ON CONFLICT (job_id) DO UPDATE SET
    runs = runs + excluded.runs,
    total_duration = total_duration + excluded.total_duration,
    last_run = CASE WHEN last_run IS NULL OR excluded.last_run > last_run
        THEN excluded.last_run ELSE last_run END,
    last_success = CASE WHEN last_success IS NULL OR excluded.last_success >= last_success
        THEN excluded.last_success ELSE last_success END,
    last_duration = excluded.last_duration,
    last_outcome = excluded.last_outcome"""


def _write_deltas(conn: sqlite3.Connection, deltas: Iterable[_Delta]) -> None:
    """Add ``deltas`` to their jobs' rows (created if missing); successes alone go through
    :data:`_SUCCESS_UPSERT` (the same result, fewer columns)."""
    full: List[Tuple[object, ...]] = []
    successes: List[Tuple[object, ...]] = []
    for delta in deltas:
        row = delta.success_row()
        if row is None:
            full.append(delta.row())
        else:
            successes.append(row)
    for columns, upsert, rows in (
        (_DELTA_COLUMNS, _DELTA_UPSERT, full),
        (_SUCCESS_COLUMNS, _SUCCESS_UPSERT, successes),
    ):
        width = columns.count(",") + 1
        for chunk in _chunks(rows, _BatchRows._CHUNK):
            conn.execute(
                f"INSERT INTO jobs ({columns}) VALUES "
                + ", ".join([f"({_marks(width)})"] * len(chunk))
                + upsert,
                list(chain.from_iterable(chunk)),
            )


def _later(current: Optional[float], value: float) -> float:
    return value if current is None or value > current else current


def _job_deltas(
    starts: List[_RunRow], finishes: List[_RunRow], skips: Dict[str, int]
) -> Dict[str, _Delta]:
    """One :class:`_Delta` per job the batch touches (runs as :func:`_run_row` rows)."""
    deltas: Dict[str, _Delta] = {}

    def delta(job_id: str) -> _Delta:
        found = deltas.get(job_id)
        if found is None:
            found = deltas[job_id] = _Delta(job_id)
        return found

    for row in starts:
        delta(row[_JOB]).started(row)
    for row in finishes:
        delta(row[_JOB]).finished(row)
    for job_id, count in skips.items():
        delta(job_id).skips += count
    return deltas


def open_store(
    directory: PathArg,
    *,
    keep_runs: int = DEFAULT_KEEP_RUNS,
    max_age: timedelta = DEFAULT_MAX_AGE,
    key_ttl: timedelta = DEFAULT_KEY_TTL,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    clock: Optional[Clock] = None,
    write_behind: bool = False,
) -> StateStore:
    """The SQLite store ``<directory>/state.db`` (options: see :class:`SQLiteStore`).

    The caller has checked ``directory`` (0700, owned, no link). Never raises for a broken
    file: the store comes back degraded and says why.
    """
    return SQLiteStore(
        os.path.join(os.fspath(directory), STATE_DB_NAME),
        keep_runs=keep_runs,
        max_age=max_age,
        key_ttl=key_ttl,
        busy_timeout=busy_timeout,
        clock=clock,
        write_behind=write_behind,
    )
