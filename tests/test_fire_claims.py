"""Fires claimed ahead: the process leading a job claims its next fire when it arms the timer,
the writer commits the claim with other records, and the fire finds it decided. A successor
takes over a claim whose fire never ran, never one with a run on record; a leader killed
before its run's start reached the file has that fire recorded as abandoned by its successor.
Also the pieces that keep the fire's path free of GIL-releasing calls: lock-file system calls
that keep the GIL, run ids without a system call, a writer queue without a lock."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest
from test_store import ROOT, a_run, at, ended

import bgjobs._group_commit as group_commit
from bgjobs import LocalJobManager
from bgjobs._ids import new_run_id
from bgjobs._local.quickcalls import flock_now, pwrite_now
from bgjobs.store import MemoryStore, SQLiteStore, StateStore
from bgjobs.types import JobRun


class _PlainStore(MemoryStore):
    """A third-party store: only the abstract methods, the rest as StateStore has them."""

    claim_fire_ahead = StateStore.claim_fire_ahead
    retake_fire = StateStore.retake_fire
    record_abandoned_fire = StateStore.record_abandoned_fire


_STORES = {
    "memory": lambda path: MemoryStore(),
    "sqlite": lambda path: SQLiteStore(path),
    "sqlite-behind": lambda path: SQLiteStore(path, write_behind=True),
    "plain": lambda path: _PlainStore(),
}


@pytest.fixture(params=sorted(_STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    made: StateStore = _STORES[request.param](tmp_path / "state.db")
    try:
        yield made
    finally:
        made.close()


def test_the_first_claim_ahead_wins_and_the_rest_lose(store: StateStore) -> None:
    first = store.claim_fire_ahead("job", at(10))
    second = store.claim_fire_ahead("job", at(10))
    other_fire = store.claim_fire_ahead("job", at(11))
    other_job = store.claim_fire_ahead("other", at(10))
    assert first.won() is True and second.won() is False
    assert other_fire.won() is True and other_job.won() is True
    assert store.claim_fire("job", at(10)) is False  # a claim now loses to the claim ahead
    assert first.scheduled_for == at(10) and first.job_id == "job"


def test_a_claim_ahead_loses_to_a_claim_made_before_it(store: StateStore) -> None:
    assert store.claim_fire("job", at(5)) is True
    assert store.claim_fire_ahead("job", at(5)).won() is False


def test_a_leader_retakes_a_claim_only_while_no_run_of_the_fire_is_on_record(
    store: StateStore,
) -> None:
    if isinstance(store, _PlainStore):
        assert store.retake_fire("job", at(20)) is False  # a store without it never retakes
        return
    assert store.claim_fire_ahead("job", at(20)).won() is True
    assert store.retake_fire("job", at(20)) is True  # no run of it: the claim is taken over
    store.start_run(a_run("r20", started=20))
    store.flush()
    assert store.retake_fire("job", at(20)) is False
    assert store.retake_fire("job", at(21)) is True  # never claimed: claimed now


def _abandoned_at(started: float, run_id: str = "lost", pid: int = 999999) -> JobRun:
    return ended(a_run(run_id, started=started, pid=pid), "abandoned", error="abandoned: gone")


def test_an_abandoned_fire_is_recorded_once_and_counted_as_a_failure(store: StateStore) -> None:
    lost = _abandoned_at(30)
    assert store.record_abandoned_fire(lost) is True
    assert store.record_abandoned_fire(_abandoned_at(30, "again")) is False
    (run,) = store.job_runs("job")
    assert run.run_id == "lost" and run.outcome == "abandoned" and run.scheduled_for == at(30)
    record = store.job("job")
    assert record is not None and (record.runs, record.failures) == (1, 1)
    assert record.last_error == "abandoned: gone"


def test_an_abandoned_fire_with_a_run_on_record_is_not_recorded(store: StateStore) -> None:
    store.start_run(a_run("ran", started=40))
    store.finish_run(ended(a_run("ran", started=40)))
    assert store.record_abandoned_fire(_abandoned_at(40)) is False
    assert [r.run_id for r in store.job_runs("job")] == ["ran"]


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "select-first"])
def test_claims_in_one_batch_are_decided_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    import bgjobs.store

    monkeypatch.setattr(bgjobs.store, "_HAVE_RETURNING", returning)  # SQLite < 3.35: False
    s = SQLiteStore(tmp_path / "state.db", write_behind=True)
    try:
        assert s.claim_fire("job7", at(3)) is True  # one key claimed before the batch
        claims = [s.claim_fire_ahead(f"job{i % 50}", at(i // 50)) for i in range(500)]
        again = [s.claim_fire_ahead(f"job{i % 50}", at(i // 50)) for i in range(500)]
        expected = [not (i % 50 == 7 and i // 50 == 3) for i in range(500)]
        assert [c.won() for c in claims] == expected
        assert [c.won() for c in again] == [False] * 500
        assert s.degraded is None and s.dropped_writes == 0
    finally:
        s.close()


def test_asking_for_a_claim_hurries_the_batch_it_waits_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "WINDOW", 30.0)  # records alone would wait 30 s
    s = SQLiteStore(tmp_path / "state.db", write_behind=True)
    try:
        s.start_run(a_run("slow"))  # wakes the writer, which now gathers for 30 s
        claim = s.claim_fire_ahead("job", at(1))
        began = time.monotonic()
        assert claim.won() is True
        assert time.monotonic() - began < 10
    finally:
        s.close()


def test_a_claim_for_a_fire_due_within_the_window_is_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job every 20 ms is claimed 20 ms ahead: its claim must not gather with the records
    for the writer's window (its fire would wait for the commit); it is committed halfway
    to its fire. A claim an hour ahead still gathers."""
    from bgjobs.schedules import utc_datetime
    from bgjobs.store import CLAIM_HURRY_AHEAD

    monkeypatch.setattr(group_commit, "WINDOW", 30.0)
    s = SQLiteStore(tmp_path / "state.db", write_behind=True)
    committed = threading.Event()
    commit = s._writes._commit

    def noting(batch: List[Any]) -> bool:
        done = commit(batch)
        if any(w.kind == "claim" for w in batch):
            committed.set()
        return done

    s._writes._commit = noting
    try:
        far = s.claim_fire_ahead("hourly", utc_datetime(time.time() + 3600))
        assert not committed.wait(0.5)  # gathering, for 30 s
        near = s.claim_fire_ahead("fast", utc_datetime(time.time() + CLAIM_HURRY_AHEAD / 4))
        assert committed.wait(10)  # nobody asked for it yet
        assert near.won(timeout=0) is True and far.won(timeout=0) is True  # one batch
    finally:
        s.close()


def test_a_claim_queued_before_a_fork_is_undecided_in_the_child(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "state.db", write_behind=True)
    try:
        claim = s.claim_fire_ahead("job", at(1))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            os._exit(0 if claim.won(timeout=1) is None else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert claim.won() is True  # the parent's writer commits it
    finally:
        s.close()


# -- managers --------------------------------------------------------------------------------


def _state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_each_fire_runs_once_across_two_managers_handing_over(tmp_path: Path) -> None:
    """Leadership passes from a to b and back while a job fires every 50 ms: every fire's
    key runs once, and each fire after a hand-over is taken over or claimed anew."""
    ran: List[datetime] = []
    lock = threading.Lock()
    fired = threading.Semaphore(0)

    def job() -> None:
        from bgjobs import current_run

        run = current_run()
        assert run is not None and run.scheduled_for is not None
        with lock:
            ran.append(run.scheduled_for)
        fired.release()

    state = _state(tmp_path)
    for _ in range(3):
        for _name in ("a", "b"):
            while fired.acquire(blocking=False):  # count this manager's runs only
                pass
            with LocalJobManager(env={}, state_dir=state) as m:
                m.schedule_job("tick", "Tick", job, 0.05)
                assert all(fired.acquire(timeout=10) for _ in range(3))
    assert len(ran) == len(set(ran)), sorted(ran)


_VICTIM = """
import sys, time
sys.path.insert(0, {root!r})
import bgjobs._group_commit as gc
gc.WINDOW = 3600.0  # the run's start never reaches the file
from bgjobs import LocalJobManager
m = LocalJobManager(env={{}}, state_dir={state!r})
def slow():
    print("started", flush=True)
    time.sleep(600)
m.schedule_job("slow", "Slow", slow, 0.2)
time.sleep(600)
"""


def test_a_leader_killed_before_its_start_was_written_has_that_fire_abandoned(
    tmp_path: Path,
) -> None:
    state = _state(tmp_path)
    victim = subprocess.Popen(
        [sys.executable, "-c", _VICTIM.format(root=ROOT, state=str(state))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout is not None and victim.stdout.readline().strip() == "started"
        with SQLiteStore(state / "state.db") as reader:
            assert reader.job_runs("slow") == []  # the start is still queued in the victim
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    with LocalJobManager(env={}, state_dir=state) as successor:
        successor.schedule_job("slow", "Slow", lambda: None, 0.2)
        runs = successor.get_job_runs("slow", limit=100)
        abandoned = [r for r in runs if r.outcome == "abandoned"]
        assert len(abandoned) == 1, runs
        (lost,) = abandoned
        assert lost.pid == victim.pid and lost.scheduled_for is not None
        assert lost.error is not None and "died" in lost.error
        status = successor.get_job_status("slow")
        assert status is not None and status.failures >= 1
        assert status.last_failure is not None
    # The successor never ran the fire the victim had taken.
    assert all(r.scheduled_for != lost.scheduled_for or r is lost for r in runs)


# -- the fire's path: no GIL-releasing calls -------------------------------------------------


def test_quick_flock_takes_and_refuses_like_fcntl(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    one = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    two = os.open(path, os.O_RDWR)
    try:
        flock_now(one, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            flock_now(two, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):  # fcntl agrees: the lock is really held
            fcntl.flock(two, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flock_now(one, fcntl.LOCK_UN)
        flock_now(two, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(one)
        os.close(two)
    with pytest.raises(OSError) as bad:
        flock_now(one, fcntl.LOCK_UN)  # closed descriptor
    assert bad.value.errno == errno.EBADF


def test_quick_pwrite_writes_at_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "record"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert pwrite_now(fd, b"hello world", 0) == 11
        assert pwrite_now(fd, b"WORLD", 6) == 5
        assert os.pread(fd, 100, 0) == b"hello WORLD"
    finally:
        os.close(fd)
    with pytest.raises(OSError) as bad:
        pwrite_now(fd, b"x", 0)
    assert bad.value.errno == errno.EBADF


def test_run_ids_are_unique_hex_and_a_forked_child_makes_its_own() -> None:
    made = [new_run_id() for _ in range(20000)]
    assert len(set(made)) == 20000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)
    # Time-ordered: the first 12 digits are milliseconds, so ids sort by creation.
    assert [i[:12] for i in made] == sorted(i[:12] for i in made)
    assert abs(int(made[-1][:12], 16) / 1000 - time.time()) < 60
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        os.write(write, new_run_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != new_run_id()


def test_records_from_many_threads_are_all_written_and_flush_waits_for_them(
    tmp_path: Path,
) -> None:
    """The writer's queue takes no lock: 16 threads submitting while others flush lose
    nothing, and a flush returns only once what was queued before it is in the file."""
    s = SQLiteStore(tmp_path / "state.db", write_behind=True)
    other = SQLiteStore(tmp_path / "state.db")
    errors: List[str] = []

    def work(t: int, check: Callable[[], None]) -> None:
        try:
            for i in range(200):
                run = a_run(f"t{t}-{i}", job_id=f"job{t}", started=i)
                s.start_run(run)
                s.finish_run(ended(run))
                if i % 50 == 49:
                    assert s.flush(30)
                    check()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    def seen_by(t: int) -> Callable[[], None]:
        def check() -> None:
            record = other.job(f"job{t}")
            assert record is not None and record.runs >= 50

        return check

    threads = [threading.Thread(target=work, args=(t, seen_by(t))) for t in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        assert s.flush(30)
        assert other.totals()[0] == 16 * 200
        assert s.dropped_writes == 0 and s._writes.pending() == 0
    finally:
        s.close()
        other.close()


_CLEAN_EXIT = """
import sys, threading, json
sys.path.insert(0, {root!r})
from bgjobs import LocalJobManager
ran = threading.Semaphore(0)
with LocalJobManager(env={{}}, state_dir={state!r}) as m:
    m.schedule_job("tick", "Tick", ran.release, 0.05)
    for _ in range(3):
        assert ran.acquire(timeout=10)
    with open({record!r}) as f:
        print(json.dumps("taken" in json.loads(f.read())), flush=True)
"""


def test_a_clean_resign_drops_the_taken_fire_from_the_schedule_record(tmp_path: Path) -> None:
    """A leader names the fire it took in the schedule's lock file (for a successor, should
    it die before the fire's start reaches the store); one that resigns cleanly lives on to
    write that run, so it drops the name, and a restart has nothing to check."""
    import json

    from bgjobs._local.hostlock import lock_file_name

    state = _state(tmp_path)
    record_file = state / lock_file_name("schedule", "tick")
    first = subprocess.run(
        [
            sys.executable,
            "-c",
            _CLEAN_EXIT.format(root=ROOT, state=str(state), record=str(record_file)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "true"  # named while it led
    resigned = json.loads(record_file.read_text())
    assert "taken" not in resigned and resigned["pid"] != os.getpid()
    noted: List[object] = []
    with LocalJobManager(env={}, state_dir=state) as restarted:
        store = restarted.store
        assert store is not None
        original = store.record_abandoned_fire

        def spy(run: JobRun) -> bool:
            noted.append(run)
            return original(run)

        store.record_abandoned_fire = spy  # type: ignore[method-assign]
        restarted.schedule_job("tick", "Tick", lambda: None, 0.05)
        runs = restarted.get_job_runs("tick", 100)
    assert noted == []  # the dead pid's record named no fire: nothing to check
    assert len(runs) >= 3 and all(r.outcome != "abandoned" for r in runs)


class _SetClock:
    """A wall clock the test sets; waits are real (the store's writer only gathers)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: float) -> object:
        return condition.wait(timeout)


def test_a_schedule_claim_is_kept_minutes_after_its_fire_and_a_dispatch_claim_a_day(
    tmp_path: Path,
) -> None:
    """A schedule firing every second must not leave 86,400 claim rows a day per job: a
    claim made ahead goes SCHEDULE_CLAIM_TTL after its due time, while a claim made at a
    dispatch (a retry may come hours later) stays key_ttl (24 h)."""
    from test_store import T0

    from bgjobs.store import CLAIM_PRUNE_INTERVAL, SCHEDULE_CLAIM_TTL

    clock = _SetClock(T0)
    s = SQLiteStore(tmp_path / "state.db", write_behind=True, clock=clock)
    other = SQLiteStore(tmp_path / "state.db")  # asks whether a claim is still there

    def writer_pass_at(now: float) -> None:
        clock.now = now
        s.record_skips("nudge")  # any batch: the writer prunes after it
        assert s.flush(30)

    try:
        assert s.claim_fire_ahead("tick", at(100)).won() is True
        assert s.claim_fire("dispatched", at(0)) is True
        writer_pass_at(T0 + 100 + SCHEDULE_CLAIM_TTL - 1)
        assert other.claim_fire("tick", at(100)) is False  # still claimed
        writer_pass_at(T0 + 100 + SCHEDULE_CLAIM_TTL + CLAIM_PRUNE_INTERVAL + 1)
        assert other.claim_fire("tick", at(100)) is True  # pruned: free again
        assert other.claim_fire("dispatched", at(0)) is False  # a day's protection
        writer_pass_at(T0 + 24 * 3600 + 2 * CLAIM_PRUNE_INTERVAL)
        assert other.claim_fire("dispatched", at(0)) is True
        assert s.degraded is None and s.dropped_writes == 0
    finally:
        s.close()
        other.close()


# -- the cheap paths stay exact --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0.1 + 0.2, 1e-7, 1e22, 1733200000.123456, 17332000001.0, float("inf"), float("-inf")],
)
def test_a_record_time_is_written_as_json_writes_it(value: float) -> None:
    import json

    from bgjobs._local.leadership import _json_number

    assert _json_number(value) == json.dumps(value)
    assert json.loads(_json_number(value)) == value
    assert _json_number(float("nan")) == json.dumps(float("nan"))


def test_the_schedule_record_is_the_leaders_json_and_follows_a_new_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record's fixed part is encoded once per leader: it still escapes any job id,
    names the process writing it (a forked child is another), and a one-off job's record
    after its fire says ``Infinity`` as json.dumps would."""
    import json

    from bgjobs._local.hostlock import lock_file_name
    from bgjobs._local.leadership import HostCoordinator

    state = _state(tmp_path)
    job_id = 'Quote"d\\✓'
    fired = threading.Event()
    with LocalJobManager(env={}, state_dir=state) as m:
        m.schedule_job(job_id, "Odd", lambda: None, 3600)
        m.schedule_once("once", "Once", fired.set, delay=0.05)
        record = json.loads((state / lock_file_name("schedule", job_id)).read_text())
        coordinator = m._coordinator
        assert isinstance(coordinator, HostCoordinator)
        assert record["pid"] == os.getpid() and record["manager"] == coordinator._token
        assert record["job"] == job_id and record["schedule"] == "every 1h"
        status = m.get_job_status(job_id)
        assert status is not None and status.next_run is not None
        assert abs(record["next"] - status.next_run.timestamp()) < 0.01

        assert fired.wait(10)  # the record is written before the run begins
        once = json.loads((state / lock_file_name("schedule", "once")).read_text())
        assert once["next"] == float("inf") and once["job"] == "once"

        job = m._job(job_id)
        assert job is not None
        leadership = coordinator.leaderships[job_id]
        head = coordinator._record_head(job, leadership)
        fixed = {"pid": os.getpid(), "manager": coordinator._token, "job": job_id}
        assert head == json.dumps({**fixed, "schedule": "every 1h"})[:-1]
        monkeypatch.setattr(os, "getpid", lambda: 4242)  # as in a forked child
        assert coordinator._record_head(job, leadership) == head.replace(
            f'"pid": {record["pid"]}', '"pid": 4242'
        )


def test_many_threads_waiting_on_claims_ahead_each_get_their_own_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim ahead has no event of its own: its waiters share one condition, woken after
    each batch. 16 threads claim and wait at once, each fire twice: every first claim wins,
    every second loses, and nobody waits for the 30 s gathering window."""
    monkeypatch.setattr(group_commit, "WINDOW", 30.0)
    s = SQLiteStore(tmp_path / "state.db", write_behind=True)
    answers: List[object] = []
    errors: List[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def claimer(n: int) -> None:
        try:
            barrier.wait(10)
            for i in range(25):
                first = s.claim_fire_ahead(f"job{n}", at(i))
                again = s.claim_fire_ahead(f"job{n}", at(i))
                got = (first.won(timeout=20), again.won(timeout=20))
                with lock:
                    answers.append(got)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(16)]
    began = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        s.close()
    assert errors == []
    assert answers == [(True, False)] * (16 * 25)
    assert time.monotonic() - began < 25
    assert s._writes._waiters == 0


def test_a_timestamp_in_any_timezone_is_stored_as_the_same_instant() -> None:
    from datetime import timedelta, timezone

    from bgjobs.store import _ts

    instant = at(3)
    assert _ts(instant) == _ts(instant.astimezone(timezone(timedelta(hours=2))))
    with pytest.raises(ValueError, match="timezone-aware"):
        _ts(instant.replace(tzinfo=None))


def test_a_stored_time_is_the_key_earlier_versions_wrote() -> None:
    """Times were stored as ``round(timestamp, 6)``; they are now the bare ``timestamp()``.
    For every datetime (whole microseconds) the two are the same double, so a claim or a
    run written by an earlier bgjobs sharing the file is found by the same key."""
    import random
    from datetime import timedelta, timezone

    from bgjobs.schedules import utc_datetime
    from bgjobs.store import _ts

    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    rng = random.Random(20261203)
    for _ in range(200_000):
        instant = epoch + timedelta(microseconds=rng.randrange(0, 4_102_444_800 * 10**6))
        assert _ts(instant) == round(instant.timestamp(), 6)
    # Times bgjobs makes for keys: due times to the millisecond, near now.
    for ms in range(1_764_720_000_000, 1_764_720_000_000 + 100_000, 7):
        instant = utc_datetime(ms / 1000)
        assert _ts(instant) == round(ms / 1000, 6) == round(instant.timestamp(), 6)
