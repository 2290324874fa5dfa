"""The state store (bgjobs.store): counters, history, claims, retention, processes, faults.

Behaviour shared by both stores runs against MemoryStore and SQLiteStore alike. Fault tests
use the real failure where the machine allows it: a real lock held by another connection,
real garbage bytes, a real SQLITE_FULL (``max_page_count``), real links and owners; the
permission tests drop to uid 65534 in a forked child when the suite runs as root, since
root ignores permission bits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import bgjobs
from bgjobs import store as store_module
from bgjobs.schedules import utc_datetime
from bgjobs.store import (
    MemoryStore,
    SQLiteStore,
    StateStore,
    clip_traceback,
    open_store,
)
from bgjobs.types import JobRun, RunOutcome

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
ROOT = str(Path(bgjobs.__file__).resolve().parent.parent)
NOBODY = 65534


class FakeClock:
    """Wall and monotonic time that move only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.mono = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


def at(seconds: float) -> datetime:
    return utc_datetime(T0 + seconds)


def a_run(
    run_id: str, job_id: str = "job", started: float = 0.0, pid: int = 4242, host: str = "h1"
) -> JobRun:
    return JobRun(
        run_id, job_id, "schedule", at(started), scheduled_for=at(started), pid=pid, host=host
    )


def ended(
    run: JobRun, outcome: RunOutcome = "completed", took: float = 1.5, error: Optional[str] = None
) -> JobRun:
    return dataclasses.replace(
        run,
        outcome=outcome,
        finished=run.started + timedelta(seconds=took),
        duration=took,
        error=error,
        traceback="Traceback...\nValueError: boom" if error else None,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite", "sqlite-behind"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[StateStore]:
    """Every store, and SQLite both ways: each write its own transaction, and written
    behind by a writer thread in batches (what managers use); reads see every write made
    before them either way."""
    s: StateStore
    if request.param == "memory":
        s = MemoryStore(clock=clock)
    else:
        behind = request.param == "sqlite-behind"
        s = SQLiteStore(tmp_path / "state.db", clock=clock, write_behind=behind)
    yield s
    assert s.degraded is None or request.param == "memory"
    assert s.dropped_writes == 0
    s.close()


def store_warnings(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> List[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "bgjobs.store" and r.levelno == level
    ]


# -- what a run does to a job ---------------------------------------------------------------


def test_a_finished_run_is_counted_with_its_last_fields(store: StateStore) -> None:
    run = a_run("r1", started=10)
    store.start_run(run)
    going = store.job("job")
    assert going is not None
    assert (going.runs, going.running_pid, going.running_host, going.last_run) == (
        0,
        4242,
        "h1",
        at(10),
    )
    assert store.get_run("r1") == run

    store.finish_run(ended(run, took=2.0))
    rec = store.job("job")
    assert rec is not None
    assert (rec.runs, rec.failures, rec.last_success, rec.last_failure) == (1, 0, at(10), None)
    assert (rec.last_duration, rec.last_outcome, rec.running_pid) == (2.0, "completed", None)
    assert store.get_run("r1") == ended(run, took=2.0)
    assert store.totals() == (1, 0, 0, 2.0)


def test_last_error_is_kept_after_a_later_success(store: StateStore) -> None:
    bad, good = a_run("r1", started=0), a_run("r2", started=60)
    for run, result in ((bad, ended(bad, "failed", error="ValueError: boom")), (good, ended(good))):
        store.start_run(run)
        store.finish_run(result)
    rec = store.job("job")
    assert rec is not None
    assert (rec.runs, rec.failures, rec.last_outcome) == (2, 1, "completed")
    assert (rec.last_failure, rec.last_success, rec.last_error) == (
        at(0),
        at(60),
        "ValueError: boom",
    )


def test_running_pid_names_the_newest_run_still_going(store: StateStore) -> None:
    old, new = a_run("r1", started=0, pid=11), a_run("r2", started=5, pid=22)
    store.start_run(old)
    store.start_run(new)
    assert store.job("job").running_pid == 22  # type: ignore[union-attr]
    store.finish_run(ended(new))
    assert store.job("job").running_pid == 11  # type: ignore[union-attr]
    store.finish_run(ended(old))
    assert store.job("job").running_pid is None  # type: ignore[union-attr]


def test_a_run_finished_twice_is_recorded_and_counted_once(store: StateStore) -> None:
    run = a_run("r1")
    store.start_run(run)
    store.start_run(run)  # a repeat changes nothing
    store.finish_run(ended(run, "failed", error="E: 1"))
    store.finish_run(ended(run, "completed"))
    assert store.totals()[:2] == (1, 1)
    assert store.get_run("r1").outcome == "failed"  # type: ignore[union-attr]


def test_a_run_never_started_is_recorded_whole_when_it_finishes(store: StateStore) -> None:
    store.finish_run(ended(a_run("r1", started=3)))
    assert store.job_runs("job") == [ended(a_run("r1", started=3))]
    assert store.job("job").runs == 1  # type: ignore[union-attr]


def test_finish_fills_in_finished_and_duration_from_the_clock(
    store: StateStore, clock: FakeClock
) -> None:
    run = a_run("r1", started=0)
    store.start_run(run)
    clock.advance(7)
    store.finish_run(dataclasses.replace(run, outcome="completed"))
    done = store.get_run("r1")
    assert done is not None and (done.finished, done.duration) == (at(7), 7.0)


def test_runs_are_listed_newest_first_up_to_the_limit(store: StateStore) -> None:
    for i in (3, 1, 4, 0, 2):
        store.finish_run(ended(a_run(f"r{i}", started=i)))
    store.finish_run(ended(a_run("other", job_id="job2")))
    assert [r.run_id for r in store.job_runs("job")] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r.run_id for r in store.job_runs("job", limit=2)] == ["r4", "r3"]
    assert store.job_runs("nobody") == []
    assert store.get_run("missing") is None


def test_each_fire_is_claimed_once(store: StateStore) -> None:
    assert store.claim_fire("job", at(0)) is True
    assert store.claim_fire("job", at(0)) is False
    assert store.claim_fire("job", at(1)) is True
    assert store.claim_fire("job2", at(0)) is True
    # the same instant in another timezone is the same fire
    assert store.claim_fire("job", at(0).astimezone(timezone(timedelta(hours=2)))) is False


def test_an_idempotency_key_answers_the_run_that_claimed_it_first(store: StateStore) -> None:
    assert store.claim_key("K1", "run-a") is None
    assert store.claim_key("K1", "run-b") == "run-a"
    assert store.claim_key("K2", "run-b") is None


def test_skips_next_run_and_pause_are_kept(store: StateStore) -> None:
    store.record_skips("job", 2)
    store.record_skips("job")
    store.set_next_run("job", at(300))
    store.set_paused("job", True)
    rec = store.job("job")
    assert rec is not None and (rec.skips, rec.next_run, rec.paused) == (3, at(300), True)
    store.set_paused("job", False)
    store.set_next_run("job", None)
    rec = store.job("job")
    assert rec is not None and (rec.next_run, rec.paused) == (None, False)
    assert store.totals() == (0, 0, 3, 0.0)
    assert set(store.jobs()) == {"job"}
    assert store.job("unknown") is None


def test_naive_datetimes_and_unfinished_outcomes_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.claim_fire("job", datetime(2027, 1, 1))
    with pytest.raises(ValueError, match="needs the run's outcome"):
        store.finish_run(a_run("r1"))


def test_dead_processes_runs_are_abandoned_and_counted_as_failures(
    store: StateStore, clock: FakeClock
) -> None:
    store.start_run(a_run("dead", started=0, pid=111))
    store.start_run(a_run("alive", started=1, pid=222))
    clock.advance(30)
    seen: List[Tuple[str, int]] = []

    def is_alive(host: str, pid: int) -> bool:
        seen.append((host, pid))
        return pid == 222

    abandoned = store.abandon_dead_runs(is_alive)
    assert sorted(seen) == [("h1", 111), ("h1", 222)]
    assert [(r.run_id, r.outcome, r.finished, r.duration) for r in abandoned] == [
        ("dead", "abandoned", at(30), 30.0)
    ]
    assert "process 111 on h1 died" in (abandoned[0].error or "")
    rec = store.job("job")
    assert rec is not None
    assert (rec.runs, rec.failures, rec.last_outcome, rec.running_pid) == (1, 1, "abandoned", 222)
    assert store.abandon_dead_runs(lambda host, pid: False)[0].run_id == "alive"
    assert store.abandon_dead_runs(lambda host, pid: False) == []  # nothing left running


def test_a_traceback_keeps_its_last_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(100))
    kept = clip_traceback(text)
    assert kept is not None and kept.startswith("...\n") and kept.endswith("line 99")
    assert len(kept.split("\n")) == 21
    long_lines = "\n".join("x" * 1000 + str(i) for i in range(10))
    kept = clip_traceback(long_lines)
    assert kept is not None and len(kept) <= 4096 + 4 and kept.endswith("x9")
    assert clip_traceback("short\n") == "short\n" or clip_traceback("short") == "short"


def test_a_failed_run_keeps_the_end_of_its_traceback(store: StateStore) -> None:
    tb = "Traceback (most recent call last):\n" + "  frame\n" * 500 + "ValueError: boom"
    run = a_run("r1")
    store.finish_run(
        dataclasses.replace(ended(run, "failed", error="ValueError: boom"), traceback=tb)
    )
    kept = store.get_run("r1").traceback  # type: ignore[union-attr]
    assert kept is not None and kept.endswith("ValueError: boom") and kept.count("\n") <= 20


# -- retention ------------------------------------------------------------------------------


def test_retention_keeps_the_newest_100_runs_per_job(store: StateStore) -> None:
    for i in range(150):
        store.finish_run(ended(a_run(f"r{i}", started=i)))
    store.finish_run(ended(a_run("x", job_id="small")))
    store.prune()
    runs = store.job_runs("job", limit=1000)
    assert len(runs) == 100 and runs[-1].run_id == "r50"
    assert len(store.job_runs("small")) == 1
    assert store.job("job").runs == 150  # type: ignore[union-attr]  # counters stay


def test_retention_drops_runs_older_than_7_days_but_never_a_running_one(
    store: StateStore, clock: FakeClock
) -> None:
    store.finish_run(ended(a_run("old", started=0)))
    store.start_run(a_run("long", started=1))
    clock.advance(7 * 86400 + 60)
    store.finish_run(ended(a_run("new", started=7 * 86400)))
    store.prune()
    assert [r.run_id for r in store.job_runs("job")] == ["new", "long"]


def test_keys_and_fire_claims_are_kept_24_hours(store: StateStore, clock: FakeClock) -> None:
    store.claim_key("old", "run-1")
    store.claim_fire("job", at(0))
    clock.advance(20 * 3600)
    store.claim_key("young", "run-2")
    store.claim_fire("job", at(1))
    clock.advance(5 * 3600)  # old: 25 h, young: 5 h
    store.prune()
    assert store.claim_key("young", "run-3") == "run-2"
    assert store.claim_fire("job", at(1)) is False
    assert store.claim_key("old", "run-4") is None  # forgotten after 24 h
    assert store.claim_fire("job", at(0)) is True


def test_retention_is_configurable_but_keys_live_at_least_24_hours(tmp_path: Path) -> None:
    clock = FakeClock()
    s = SQLiteStore(tmp_path / "state.db", keep_runs=3, max_age=timedelta(hours=1), clock=clock)
    for i in range(5):
        s.finish_run(ended(a_run(f"r{i}", started=i)))
    s.prune()
    assert [r.run_id for r in s.job_runs("job")] == ["r4", "r3", "r2"]
    s.prune(now=at(7200))
    assert s.job_runs("job") == []
    s.close()
    with pytest.raises(ValueError, match="at least 24 hours"):
        MemoryStore(key_ttl=timedelta(hours=1))
    with pytest.raises(ValueError, match="keep_runs"):
        SQLiteStore(tmp_path / "x.db", keep_runs=0)


# -- threads --------------------------------------------------------------------------------


def test_20_threads_counts_add_up_and_each_fire_has_one_winner(store: StateStore) -> None:
    threads, per_thread = 20, 200
    wins: Counter[int] = Counter()
    wins_lock = threading.Lock()  # guards wins
    errors: List[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            start.wait(timeout=10)
            mine = []
            for i in range(per_thread):
                if store.claim_fire("fire", at(i)):
                    mine.append(i)
                run = a_run(f"{t}-{i}", job_id=f"job{t % 5}", started=i)
                store.start_run(run)
                store.finish_run(ended(run, "failed" if i % 2 else "completed", took=0.5))
            with wins_lock:
                wins.update(mine)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=120)
    assert errors == []
    assert sorted(wins) == list(range(per_thread)) and set(wins.values()) == {1}
    total = threads * per_thread
    assert store.totals() == (total, total // 2, 0, total * 0.5)
    assert all(r.runs == total // 5 and r.running_pid is None for r in store.jobs().values())


# -- SQLite: files, schema, restarts ----------------------------------------------------------


def test_state_db_is_created_0600_in_wal_mode_and_survives_reopening(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    assert s.path == str(tmp_path / "state.db")
    run = a_run("r1")
    s.start_run(run)
    s.finish_run(ended(run, "failed", error="E: x"))
    s.set_paused("job", True)
    s.claim_key("K", "r1")
    s.close()
    assert (tmp_path / "state.db").stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(tmp_path / "state.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT value FROM meta").fetchone()[0] == str(
            store_module.SCHEMA_VERSION
        )
    again = open_store(tmp_path)
    assert again.get_run("r1") == ended(run, "failed", error="E: x")
    rec = again.job("job")
    assert rec is not None and (rec.runs, rec.failures, rec.paused, rec.last_error) == (
        1,
        1,
        True,
        "E: x",
    )
    assert again.claim_key("K", "r2") == "r1"
    again.close()


def test_an_older_schema_is_migrated_forward_keeping_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).close()  # an empty file (version 0) gets the whole schema
    s = SQLiteStore(path)
    s.finish_run(ended(a_run("r1")))
    s.close()
    # This code's schema becomes "version 1"; a newer bgjobs adds a migration.
    v2 = (
        "ALTER TABLE runs ADD COLUMN note TEXT",
        "UPDATE runs SET note = 'migrated'",
    )
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, v2])
    caplog.set_level(logging.INFO, "bgjobs.store")
    s = SQLiteStore(path)
    assert s.degraded is None and s.get_run("r1") == ended(a_run("r1"))
    s.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT note FROM runs").fetchall() == [("migrated",)]
        assert raw.execute("SELECT value FROM meta").fetchone()[0] == "2"
    assert any(
        "migrated from schema version 1 to 2" in m for m in store_warnings(caplog, logging.INFO)
    )


def test_a_failing_migration_leaves_the_file_at_its_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    broken = ("ALTER TABLE runs ADD COLUMN note TEXT", "ALTER TABLE nowhere ADD COLUMN x")
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, broken])
    s = SQLiteStore(path)
    assert s.degraded is not None and "no such table: nowhere" in s.degraded
    s.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM meta").fetchone()[0] == "1"
        assert "note" not in [c[1] for c in raw.execute("PRAGMA table_info(runs)")]


def test_a_newer_schema_is_left_untouched_and_degrades_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    s = SQLiteStore(path, retry_interval=0)
    s.start_run(a_run("r1"))
    s.finish_run(ended(a_run("r1")))
    assert s.degraded is not None
    assert f"state store {path} was written by a newer bgjobs (schema version 99" in s.degraded
    assert "upgrade bgjobs" in s.degraded and "kept in memory only" in s.degraded
    assert s.dropped_writes == 2 and s.job("job") is None
    assert store_warnings(caplog) == [s.degraded]  # one WARNING for three attempts
    s.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_forked_child_reconnects_and_leaves_the_parents_connection_alone(
    tmp_path: Path,
) -> None:
    s = SQLiteStore(tmp_path / "state.db")
    s.set_paused("job", True)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            s.set_paused("child", True)  # notices the fork by itself
            code = 0 if s.job("job") is not None and s.degraded is None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s.job("child") is not None and s.job("child").paused  # type: ignore[union-attr]
    s.set_paused("job", False)  # the parent's connection still works
    assert s.degraded is None
    s.close()


# -- processes ------------------------------------------------------------------------------

RACE_SCRIPT = """
import json, os, sys, time
from bgjobs.schedules import utc_datetime
from bgjobs.store import SQLiteStore
path, go, fires, T0 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
store = SQLiteStore(path)
print("ready", flush=True)
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
wins = [i for i in range(fires) if store.claim_fire("job", utc_datetime(T0 + i))]
owner = store.claim_key("K", f"run-{os.getpid()}")
print(json.dumps({"pid": os.getpid(), "wins": wins, "owner": owner,
                  "degraded": store.degraded, "dropped": store.dropped_writes}))
"""


def python(*args: str) -> List[str]:
    return [sys.executable, "-c", *args]


def child_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


@pytest.mark.slow
def test_processes_racing_for_the_same_fires_and_key_get_one_winner_each(
    tmp_path: Path,
) -> None:
    path, go, fires, count = tmp_path / "state.db", tmp_path / "go", 300, 4
    SQLiteStore(path).close()  # the schema exists, so the race is on the claims
    procs = [
        subprocess.Popen(
            python(RACE_SCRIPT, str(path), str(go), str(fires), str(T0)),
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(count)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    assert [(r["degraded"], r["dropped"]) for r in results] == [(None, 0)] * count
    wins = Counter(i for r in results for i in r["wins"])
    assert sorted(wins) == list(range(fires)) and set(wins.values()) == {1}
    owners = [r for r in results if r["owner"] is None]
    assert len(owners) == 1
    first = f"run-{owners[0]['pid']}"
    assert all(r["owner"] == first for r in results if r is not owners[0])


@pytest.mark.slow
def test_pause_in_one_process_is_seen_in_another(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    here = SQLiteStore(path)
    here.set_paused("job", False)
    opening = "import sys; from bgjobs.store import SQLiteStore; s = SQLiteStore(sys.argv[1]); "
    script = opening + "s.set_paused('job', True)"
    subprocess.run(python(script, str(path)), check=True, env=child_env(), timeout=60)
    assert here.job("job").paused is True  # type: ignore[union-attr]
    here.set_paused("job", False)
    read = opening + "print(s.job('job').paused)"
    out = subprocess.run(
        python(read, str(path)),
        check=True,
        env=child_env(),
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "False"
    here.close()


@pytest.mark.slow
def test_a_run_whose_process_died_is_abandoned_not_left_running(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    script = f"""
import os, sys
from bgjobs.schedules import utc_datetime
from bgjobs.store import SQLiteStore
from bgjobs.types import JobRun
s = SQLiteStore(sys.argv[1])
s.start_run(JobRun("r1", "job", "schedule", utc_datetime({T0}), pid=os.getpid(), host="h1"))
print(os.getpid(), flush=True)
os._exit(0)  # dies mid-run: no finish_run, no close
"""
    out = subprocess.run(
        python(script, str(path)),
        check=True,
        env=child_env(),
        timeout=60,
        capture_output=True,
        text=True,
    )
    dead_pid = int(out.stdout)
    s = SQLiteStore(path)
    assert s.job("job").running_pid == dead_pid  # type: ignore[union-attr]

    def is_alive(host: str, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    assert [r.run_id for r in s.abandon_dead_runs(is_alive)] == ["r1"]
    rec = s.job("job")
    assert rec is not None and (rec.running_pid, rec.last_outcome, rec.failures) == (
        None,
        "abandoned",
        1,
    )
    s.close()


# -- faults ---------------------------------------------------------------------------------


def test_a_corrupt_file_is_moved_aside_and_recreated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    path = tmp_path / "state.db"
    garbage = b"this is not sqlite " * 500
    path.write_bytes(garbage)
    path.chmod(0o600)
    s = SQLiteStore(path, clock=clock)
    s.start_run(a_run("r1"))
    assert s.degraded is None and s.dropped_writes == 0
    assert s.get_run("r1") == a_run("r1")
    aside = tmp_path / "state.db.corrupt-20270115T080000.000000Z"
    assert aside.read_bytes() == garbage
    [warning] = store_warnings(caplog)
    assert f"state store {path} was corrupt (file is not a database)" in warning
    assert f"moved it aside to {aside}" in warning
    s.close()


def test_a_write_lock_held_past_the_busy_timeout_degrades_until_released(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bgjobs.store")
    path = tmp_path / "state.db"
    s = SQLiteStore(path, busy_timeout=0.05, retry_interval=0)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        s.start_run(a_run("r1"))
        s.set_paused("job", True)
        assert time.monotonic() - started < 5
        assert s.degraded is not None
        assert s.degraded.startswith(f"state store {path} is locked by another process")
        assert f"fuser {path}" in s.degraded and "kept in memory only" in s.degraded
        assert s.dropped_writes == 2
        assert store_warnings(caplog) == [s.degraded]  # one WARNING for two calls
        assert s.claim_fire("job", at(0)) is True  # answered from memory meanwhile
        assert s.claim_fire("job", at(0)) is False
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    s.start_run(a_run("r2"))
    assert s.degraded is None and s.get_run("r2") is not None
    assert store_warnings(caplog, logging.INFO) == [
        f"state store {path} is usable again; 2 write(s) made while it was not were kept in "
        "memory only"
    ]
    s.close()


def test_while_degraded_the_file_is_retried_once_per_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "state.db"
    s = SQLiteStore(path, busy_timeout=0.2, retry_interval=60, clock=clock)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    s.start_run(a_run("r1"))  # waits for the busy timeout once
    holder.execute("ROLLBACK")
    holder.close()
    t = time.monotonic()
    for i in range(50):  # within the interval: dropped at once, no wait
        s.start_run(a_run(f"x{i}"))
    assert time.monotonic() - t < 0.5 and s.dropped_writes == 51 and s.degraded is not None
    clock.advance(61)
    s.start_run(a_run("r2"))
    assert s.degraded is None and s.get_run("r2") is not None
    s.close()


def test_a_full_disk_degrades_and_counts_dropped_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as raw:
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
    raw.close()

    class SmallDisk(SQLiteStore):
        """A real SQLITE_FULL: the file may not grow past its size when created."""

        def _connect(self) -> sqlite3.Connection:
            conn = super()._connect()
            conn.execute(f"PRAGMA max_page_count = {pages}")
            return conn

    s = SmallDisk(path, retry_interval=0)
    for i in range(500):
        s.finish_run(ended(a_run(f"r{i}", started=i), "failed", error="E: " + "x" * 1500))
        if s.degraded:
            break
    assert s.degraded is not None
    assert s.degraded.startswith(f"state store {path} cannot grow (database or disk is full)")
    assert f"free space on the filesystem holding {tmp_path}" in s.degraded
    s.finish_run(ended(a_run("more", started=999), "failed", error="E: " + "x" * 1500))
    assert s.dropped_writes == 2
    assert store_warnings(caplog) == [s.degraded]
    s.close()


def test_a_read_only_connection_degrades_writes_but_not_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As root a chmod does not stop writes, so this opens SQLite read-only (mode=ro): the
    same SQLITE_READONLY a read-only mount gives. Permission bits: the nobody test below."""

    class ReadOnly(SQLiteStore):
        def _connect(self) -> sqlite3.Connection:
            return sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )

    path = tmp_path / "state.db"
    s = SQLiteStore(path)
    s.set_paused("job", True)
    s.close()
    ro = ReadOnly(path, retry_interval=0)
    assert ro.degraded is None and ro.job("job").paused  # type: ignore[union-attr]
    ro.start_run(a_run("r1"))
    assert ro.degraded is not None
    assert ro.degraded.startswith(f"state store {path} is read-only (attempt to write a readonly")
    assert f"chmod u+rw {path}*" in ro.degraded and "kept in memory only" in ro.degraded
    assert ro.job("job") is not None and ro.degraded is not None  # a read does not heal it
    ro.set_paused("job", False)
    assert ro.dropped_writes == 2 and store_warnings(caplog) == [ro.degraded]
    ro.close()


def _as_nobody(work: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Run ``work`` as uid 65534 in a forked child (exec is impossible: this interpreter
    lives under /root); its JSON answer comes back through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = work()
        except BaseException:
            answer = {"error": traceback.format_exc()}
        with os.fdopen(write_end, "w") as out:
            json.dump(answer, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as inp:
        text = inp.read()
    os.waitpid(pid, 0)
    result: Dict[str, Any] = json.loads(text)
    assert "error" not in result, result.get("error")
    return result


def _permission_scenarios(base: str) -> Dict[str, Any]:
    records: List[Tuple[str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelname, record.getMessage()))

    log = logging.getLogger("bgjobs.store")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    out: Dict[str, Any] = {"uid": os.geteuid()}
    path = os.path.join(base, "state.db")
    s = SQLiteStore(path, retry_interval=0)
    s.start_run(a_run("r1"))
    s.close()
    for mode in (0o400, 0o000):
        os.chmod(path, mode)
        s = SQLiteStore(path, retry_interval=0)
        s.start_run(a_run(f"r-{mode:o}"))
        s.start_run(a_run(f"r-{mode:o}-2"))
        out[f"file {mode:03o}"] = (s.degraded, s.dropped_writes, records[:])
        records.clear()
        os.chmod(path, 0o600)
        s.start_run(a_run(f"r-{mode:o}-3"))
        out[f"file {mode:03o} fixed"] = (
            s.degraded,
            s.get_run(f"r-{mode:o}-3") is not None,
            records[:],
        )
        records.clear()
        s.close()
    os.chmod(base, 0o500)
    s = SQLiteStore(path, retry_interval=0)
    s.start_run(a_run("d1"))
    out["dir 500"] = (s.degraded, s.dropped_writes, records[:])
    records.clear()
    os.chmod(base, 0o700)
    s.start_run(a_run("d2"))
    out["dir 500 fixed"] = (s.degraded, s.get_run("d2") is not None, records[:])
    s.close()
    return out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_permission_faults_name_the_path_and_the_fix_then_recover() -> None:
    """chmod 400/000 on state.db and 500 on its directory, with real permission checks:
    as uid 65534 when the suite runs as root, else as the current user."""
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="bgjobs-store-perm-")
    try:
        if os.geteuid() == 0:
            os.chown(base, NOBODY, NOBODY)
            out = _as_nobody(lambda: _permission_scenarios(base))
        else:
            out = _permission_scenarios(base)
    finally:
        os.chmod(base, 0o700)
        shutil.rmtree(base, ignore_errors=True)
    path, uid = os.path.join(base, "state.db"), out["uid"]
    for mode in ("400", "000"):
        degraded, dropped, logs = out[f"file {mode}"]
        assert degraded == (
            f"state store {path} is read-only: {path} (mode 0{mode}) cannot be read and written "
            f"by uid {uid}: chmod u+rw {path}*; run records are kept in memory only until then"
        )
        assert dropped == 2 and logs == [["WARNING", degraded]]
        degraded, recorded, logs = out[f"file {mode} fixed"]
        assert (degraded, recorded) == (None, True)
        assert logs == [
            [
                "INFO",
                f"state store {path} is usable again; 2 write(s) made while it was not were "
                "kept in memory only",
            ]
        ]
    degraded, dropped, logs = out["dir 500"]
    assert degraded == (
        f"state store {path} cannot be written: its directory {base} (owner uid {uid}, mode "
        f"0500) is not writable by uid {uid}: chmod u+rwx {base}; run records are kept in "
        "memory only until then"
    )
    assert dropped == 1 and logs == [["WARNING", degraded]]
    assert out["dir 500 fixed"][:2] == [None, True]


def test_a_missing_directory_is_named_with_the_fix(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "gone" / "state.db")
    assert s.degraded is not None
    assert s.degraded.startswith(
        f"state store {tmp_path}/gone/state.db cannot be created: its directory "
        f"{tmp_path}/gone is unusable (No such file or directory): create it (mkdir -m 700"
    )
    s.close()


@pytest.mark.parametrize("which", ["state.db", "state.db-wal", "state.db-shm"])
def test_a_symlinked_state_file_is_refused_and_not_followed(
    tmp_path: Path, which: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (tmp_path / which).symlink_to(target)
    s = SQLiteStore(tmp_path / "state.db", retry_interval=0)
    s.start_run(a_run("r1"))
    assert s.degraded == (
        f"state store {tmp_path}/state.db is refused: {tmp_path}/{which} is a symbolic link "
        f"(to {target}): remove {tmp_path}/{which} (bgjobs creates a new one); run records "
        "are kept in memory only until then"
    )
    assert s.dropped_writes == 1 and store_warnings(caplog) == [s.degraded]
    assert target.read_bytes() == b""
    s.close()


def test_a_hard_linked_state_db_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    SQLiteStore(path).close()
    os.link(path, tmp_path / "other-name")
    s = SQLiteStore(path)
    s.set_paused("job", True)
    assert s.degraded is not None
    assert f"is refused: {path} has 2 hard links" in s.degraded
    assert f"remove {path}" in s.degraded and s.dropped_writes == 1
    assert store_warnings(caplog) == [s.degraded]
    s.close()


def test_a_state_db_of_another_owner_or_not_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "state.db").mkdir()
    s = SQLiteStore(tmp_path / "a" / "state.db")
    assert s.degraded is not None and "state.db is not a regular file" in s.degraded
    s.close()
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    (tmp_path / "b").mkdir()
    SQLiteStore(tmp_path / "b" / "state.db").close()
    os.chown(tmp_path / "b" / "state.db", NOBODY, NOBODY)
    s = SQLiteStore(tmp_path / "b" / "state.db")
    assert s.degraded is not None
    assert f"is owned by uid {NOBODY}, not by this process's uid 0" in s.degraded
    s.close()


def test_a_closed_store_drops_and_counts_writes(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "state.db")
    s.close()
    s.close()
    s.start_run(a_run("r1"))
    assert s.dropped_writes == 1 and s.job("job") is None
    assert s.degraded == f"state store {tmp_path}/state.db is closed"


def test_programming_errors_are_raised_not_swallowed(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "state.db")
    # ProgrammingError on Python 3.11+, InterfaceError before: both are the caller's bug.
    with pytest.raises((sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        s.set_paused(object(), True)  # type: ignore[arg-type]
    assert s.degraded is None
    s.set_paused("job", True)  # the connection is still usable
    assert s.job("job").paused  # type: ignore[union-attr]
    s.close()


def test_a_store_dropped_without_close_closes_its_connection_itself(tmp_path: Path) -> None:
    """Not left to the garbage collector's thread: a connection closed there would hold
    SQLite's process-wide mutexes outside the fork guard (a child forked then hangs)."""
    import gc

    s = SQLiteStore(tmp_path / "state.db")
    s.start_run(a_run("r1"))
    conn = s._conn
    assert conn is not None
    del s
    gc.collect()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")
