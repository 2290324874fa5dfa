"""The state store as a manager uses it: one truth for two managers, a degraded store that
loses nothing and says so everywhere, and the memory fallback."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, List, Set

import pytest
from werkzeug.test import Client

from bgjobs import LocalJobManager
from bgjobs.config import Settings
from bgjobs.store import SQLiteStore
from bgjobs.wsgi import create_app

SECRET = "s3cret-for-tests"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def _fail() -> None:
    raise RuntimeError("upstream down")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_two_managers_on_one_state_dir_show_one_truth(state_dir: Path) -> None:
    """What one process ran, the other shows: counts, the last error, the history."""
    with (
        LocalJobManager(env={}, state_dir=state_dir) as a,
        LocalJobManager(env={}, state_dir=state_dir) as b,
    ):
        for manager in (a, b):
            manager.schedule_job("flaky", "Flaky", _fail, 3600)
        assert a.trigger_job("flaky") and a.trigger_job("flaky")
        status = b.get_job_status("flaky")
        assert status is not None
        assert (status.runs, status.failures, status.status) == (2, 2, "failed")
        assert status.last_error == "RuntimeError: upstream down"
        runs = b.get_job_runs("flaky")
        assert [r.outcome for r in runs] == ["failed", "failed"]
        assert runs[0].started >= runs[1].started  # newest first
        assert runs[0].traceback is not None and "upstream down" in runs[0].traceback
        assert b.get_run(runs[0].run_id) == runs[0]
        assert b.get_job_metrics().failed_jobs == 2


def test_pause_is_seen_by_the_other_manager_and_blocks_scheduled_fires(state_dir: Path) -> None:
    ran = threading.Event()
    with (
        LocalJobManager(env={}, state_dir=state_dir) as a,
        LocalJobManager(env={}, state_dir=state_dir) as b,
    ):
        a.schedule_job("tick", "Tick", ran.set, 3600)
        b.schedule_job("tick", "Tick", ran.set, 3600)
        a.pause_job("tick")
        status = b.get_job_status("tick")
        assert status is not None and status.status == "paused"
        due = b.get_job_status("tick").next_run  # type: ignore[union-attr]
        job = b._job("tick")
        assert job is not None and not b.run_scheduled(job, due)  # a paused fire never runs
        assert not ran.is_set()
        assert b.dispatch("tick").outcome == "paused"
        assert b.trigger_job("tick") and ran.is_set()  # a manual run still does
        b.resume_job("tick")
        status = a.get_job_status("tick")
        assert status is not None and status.status == "completed"


def test_many_fires_at_once_read_the_pauses_once_and_none_runs_a_paused_job(
    state_dir: Path,
) -> None:
    """The paused set is read again at most once a second, by one thread: the others go on
    with the set it replaces instead of queueing for the store. With no set read yet
    (first fires, or right after this process paused a job) they all wait for the read,
    so none of them runs a job paused in another process."""
    with (
        LocalJobManager(env={}, state_dir=state_dir) as a,
        LocalJobManager(env={}, state_dir=state_dir) as b,
    ):
        a.schedule_job("tick", "Tick", lambda: None, 3600)
        a.pause_job("tick")
        store = b.store
        assert store is not None
        reads: List[int] = []
        read = store.paused_jobs
        gate = threading.Event()

        def slow_read() -> Set[str]:
            reads.append(1)
            gate.wait(5)  # every other thread asks meanwhile
            return read()

        store.paused_jobs = slow_read  # type: ignore[method-assign]
        barrier = threading.Barrier(16)
        answers: List[bool] = []

        def ask() -> None:
            barrier.wait(10)
            answers.append(b._is_paused("tick"))

        def all_ask() -> None:
            threads = [threading.Thread(target=ask) for _ in range(16)]
            for thread in threads:
                thread.start()
            threading.Timer(0.3, gate.set).start()
            for thread in threads:
                thread.join(10)

        all_ask()  # never read: all wait for the one read
        assert answers == [True] * 16 and len(reads) == 1
        b._paused_seen = (b._paused_seen[0] - 60, b._paused_seen[1])  # a minute old
        a.resume_job("tick")
        answers.clear()
        gate.clear()
        all_ask()  # one reads, the rest answer from the old set at once
        assert len(reads) == 2 and len(answers) == 16
        assert b._is_paused("tick") is False  # the read replaced it


def test_a_fire_reads_a_stale_paused_set_again_after_its_run_not_before(
    state_dir: Path,
) -> None:
    """A set of paused jobs between one and two seconds old answers a scheduled fire at
    once, and that fire reads it again after its run: once a second, a fire was late by a
    query. Older than two seconds, a fire waits for the read, so a pause made elsewhere
    holds within two seconds however rarely the jobs fire."""
    order: List[str] = []
    with (
        LocalJobManager(env={}, state_dir=state_dir) as a,
        LocalJobManager(env={}, state_dir=state_dir) as b,
    ):
        b.schedule_job("tick", "Tick", lambda: order.append("run"), 3600)
        a.schedule_job("tick", "Tick", lambda: None, 3600)
        store = b.store
        assert store is not None
        read = store.paused_jobs

        def noted_read() -> Set[str]:
            order.append("read")
            return read()

        store.paused_jobs = noted_read  # type: ignore[method-assign]
        job = b._job("tick")
        assert job is not None
        due = datetime(2030, 1, 1, tzinfo=timezone.utc)  # a fire nobody claimed ahead
        assert not b._is_paused("tick") and order == ["read"]  # the set is read
        order.clear()
        b._paused_seen = (b._paused_seen[0] - 1.5, b._paused_seen[1])  # 1.5 s old
        assert b.run_scheduled(job, due)
        assert order == ["run", "read"] and not b._paused_reread
        a.pause_job("tick")  # in the other manager: b's set does not have it yet
        order.clear()
        b._paused_seen = (b._paused_seen[0] - 2.5, b._paused_seen[1])  # too old to answer
        assert not b.run_scheduled(job, due + timedelta(hours=1))  # read first: it holds
        assert order == ["read"]


def test_pause_survives_a_restart(state_dir: Path) -> None:
    with LocalJobManager(env={}, state_dir=state_dir) as first:
        first.schedule_job("tick", "Tick", lambda: None, 3600)
        first.pause_job("tick")
    with LocalJobManager(env={}, state_dir=state_dir) as second:
        second.schedule_job("tick", "Tick", lambda: None, 3600)
        assert second.get_job_status("tick").status == "paused"  # type: ignore[union-attr]


def test_a_fire_claimed_by_one_manager_is_not_run_by_the_other(state_dir: Path) -> None:
    calls: List[str] = []
    with (
        LocalJobManager(env={}, state_dir=state_dir) as a,
        LocalJobManager(env={}, state_dir=state_dir) as b,
    ):
        a.schedule_job("once", "Once", lambda: calls.append("a"), 3600)
        b.schedule_job("once", "Once", lambda: calls.append("b"), 3600)
        due = a.get_job_status("once").next_run  # type: ignore[union-attr]
        job_a, job_b = a._job("once"), b._job("once")
        assert job_a is not None and job_b is not None
        # a leads: it claimed the fire when it armed it, an interval ahead.
        claim = a._armed[job_a].args[2]
        assert claim is not None and claim.scheduled_for == due
        assert b.run_scheduled(job_b, due) is False
        assert a.run_scheduled(job_a, due, claim=claim) is True
        assert b.run_scheduled(job_b, due) is False
        assert calls == ["a"]


def test_a_leader_takes_over_a_claim_its_predecessor_never_ran(state_dir: Path) -> None:
    calls: List[str] = []
    with LocalJobManager(env={}, state_dir=state_dir) as a:
        a.schedule_job("hourly", "Hourly", lambda: calls.append("a"), 3600)
        due = a.get_job_status("hourly").next_run  # type: ignore[union-attr]
        assert a.store is not None and a.store.flush()
        assert a.store.claim_fire("hourly", due) is False  # claimed ahead by a
    with LocalJobManager(env={}, state_dir=state_dir) as b:  # a's successor
        b.schedule_job("hourly", "Hourly", lambda: calls.append("b"), 3600)
        job_b = b._job("hourly")
        assert job_b is not None and b.get_job_status("hourly").next_run == due
        claim = b._armed[job_b].args[2]
        assert claim.won() is False  # a's claim stands...
        assert b.run_scheduled(job_b, due, claim=claim) is True  # ...and b takes it over
        # Once a run of the fire is on record, nobody takes it over again.
        assert b.store is not None and b.store.retake_fire("hourly", due) is False
    assert calls == ["b"]


def test_a_run_key_runs_once_across_managers(state_dir: Path) -> None:
    calls: List[str] = []
    with (
        LocalJobManager(env={}, state_dir=state_dir) as a,
        LocalJobManager(env={}, state_dir=state_dir) as b,
    ):
        for name, manager in (("a", a), ("b", b)):
            manager.schedule_job("pay", "Pay", lambda name=name: calls.append(name), 3600)
        first = a.dispatch("pay", run_key="invoice-42")
        again = b.dispatch("pay", run_key="invoice-42")
        assert first.outcome == "ran" and again.outcome == "duplicate"
        assert first.run is not None and again.run is not None
        assert again.run.run_id == first.run.run_id and again.run.outcome == "completed"
        assert b.trigger_job("pay", run_key="invoice-42") is True  # answered, not re-run
        assert calls == ["a"]


@pytest.fixture
def held_lock(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding state.db's write lock, as a stuck process would."""
    LocalJobManager(env={}, state_dir=state_dir).close()  # creates state.db
    conn = sqlite3.connect(str(state_dir / "state.db"), isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def test_a_locked_store_degrades_loudly_and_loses_nothing(
    state_dir: Path, held_lock: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(state_dir / "state.db", busy_timeout=0.05, retry_interval=0.0)
    manager = LocalJobManager(settings=Settings.from_env({"BGJOBS_SECRET": SECRET}), store=store)
    try:
        manager.schedule_job("flaky", "Flaky", _fail, 3600)
        assert manager.trigger_job("flaky") and manager.trigger_job("flaky")

        # The runs happened and are shown, from this process's memory.
        status = manager.get_job_status("flaky")
        assert status is not None and (status.runs, status.failures) == (2, 2)
        assert [r.outcome for r in manager.get_job_runs("flaky")] == ["failed", "failed"]
        health = manager.store_health()
        assert health is not None and health["degraded"] and health["dropped_writes"] >= 2

        # One WARNING naming the file, not one per write.
        warnings = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and "state.db" in r.getMessage()
        ]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]

        # Every face says whose truth it shows.
        client = Client(create_app(manager, secret=SECRET))
        answer = client.get("/api/cron/status", headers=AUTH)
        assert answer.headers["Bgjobs-State-Store"].startswith("degraded; ")
        assert "degraded" in client.get("/api/cron/", headers=AUTH).get_data(as_text=True)
        metrics = client.get("/api/cron/metrics", headers=AUTH).get_data(as_text=True)
        assert "bgjobs_state_store_degraded 1" in metrics

        # Released: the store takes writes again and says so.
        held_lock.rollback()
        assert manager.trigger_job("flaky")
        assert manager.store_health()["degraded"] is None  # type: ignore[index]
        answer = client.get("/api/cron/status", headers=AUTH)
        assert answer.headers["Bgjobs-State-Store"] == "shared"
    finally:
        manager.close()


def test_memory_only_managers_say_so() -> None:
    with LocalJobManager(env={"BGJOBS_SECRET": SECRET}) as manager:
        assert manager.store is None and manager.store_health() is None
        client = Client(create_app(manager, secret=SECRET))
        assert (
            client.get("/api/cron/status", headers=AUTH).headers["Bgjobs-State-Store"] == "memory"
        )


def test_the_state_directory_must_be_private(tmp_path: Path) -> None:
    from bgjobs.errors import UnsafeLockDirError

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafeLockDirError, match="shared"):
        LocalJobManager(env={}, state_dir=shared)


def test_a_hard_linked_lock_file_is_refused(tmp_path: Path, state_dir: Path) -> None:
    from bgjobs.errors import UnsafeLockDirError

    LocalJobManager(env={}, state_dir=state_dir).close()
    elsewhere = tmp_path / "elsewhere.lock"
    elsewhere.write_text("")
    os.link(elsewhere, state_dir / "schedule-sync.lock")  # another name for our lock file
    with (
        LocalJobManager(env={}, state_dir=state_dir) as manager,
        pytest.raises(UnsafeLockDirError, match="hard link"),
    ):
        manager.schedule_job("sync", "Sync", lambda: None, 60)


def test_history_retention_comes_from_the_settings(state_dir: Path) -> None:
    env = {"BGJOBS_STATE_DIR": str(state_dir), "BGJOBS_HISTORY_RUNS": "3"}
    with LocalJobManager(env=env) as manager:
        manager.schedule_job("tick", "Tick", lambda: None, 3600)
        for _ in range(5):
            assert manager.trigger_job("tick")
        assert manager.store is not None
        manager.store.prune()
        assert len(manager.get_job_runs("tick")) == 3
        assert manager.get_job_status("tick").runs == 5  # type: ignore[union-attr]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX processes")
def test_a_child_forked_while_threads_write_to_the_store_can_use_it(state_dir: Path) -> None:
    """SQLite's own mutexes are process-wide: a fork while another thread is inside SQLite
    must not leave the child's first SQLite call waiting forever."""
    import gc
    import warnings

    from support_mp import fork_and_report, wait_for

    gc.collect()  # stores that earlier tests dropped are closed now, not by a writer thread
    with LocalJobManager(env={}, state_dir=state_dir) as manager:
        manager.schedule_job("busy", "Busy", lambda: None, 3600)
        stop = threading.Event()

        def writer() -> None:
            while not stop.is_set():
                manager.trigger_job("busy")

        threads = [threading.Thread(target=writer, daemon=True) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            # Runs on record before the first fork, so the child has something to read.
            assert wait_for(lambda: bool(manager.get_job_runs("busy")), 10)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
                for _ in range(10):
                    report = fork_and_report(lambda: _read_and_write(manager))
                    assert report is not None and report >= 1
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)


def _read_and_write(manager: LocalJobManager) -> int:
    """In a forked child: one SQLite read and two writes; the runs the store shows."""
    manager.pause_job("busy")
    manager.resume_job("busy")
    return len(manager.get_job_runs("busy"))
