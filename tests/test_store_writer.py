"""Run records written behind (``SQLiteStore(write_behind=True)``, what managers use): one
writer thread commits every queued record in one transaction, other processes see them
shortly, the process reads its own writes, nothing queued is lost at exit, a fault is
degraded and counted as for direct writes, and a saturated writer never starves another
process of the file."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest
from test_store import ROOT, a_run, at, ended, store_warnings

from bgjobs.store import MemoryStore, SQLiteStore, StateStore


def behind(path: Path, **options: object) -> SQLiteStore:
    return SQLiteStore(path, write_behind=True, **options)  # type: ignore[arg-type]


def test_another_connection_sees_records_soon_without_a_flush(tmp_path: Path) -> None:
    writer = behind(tmp_path / "state.db")
    reader = SQLiteStore(tmp_path / "state.db")
    try:
        writer.start_run(a_run("r1"))
        writer.finish_run(ended(a_run("r1")))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = reader.get_run("r1")
            if seen is not None and seen.outcome != "running":
                break
            time.sleep(0.01)
        assert reader.get_run("r1") == ended(a_run("r1"))
        assert reader.job("job").runs == 1  # type: ignore[union-attr]
    finally:
        writer.close()
        reader.close()


def test_the_writing_process_reads_its_own_writes_at_once(tmp_path: Path) -> None:
    s = behind(tmp_path / "state.db")
    try:
        for i in range(50):
            s.start_run(a_run(f"r{i}", started=i))
            s.finish_run(ended(a_run(f"r{i}", started=i), "failed" if i % 5 == 0 else "completed"))
            s.record_skips("job")
            # Every read waits for the writes queued before it.
            assert s.job("job").runs == i + 1  # type: ignore[union-attr]
        record = s.job("job")
        assert record is not None
        assert (record.runs, record.failures, record.skips) == (50, 10, 50)
        assert record.last_error is None and record.last_failure == at(45)
        assert record.running_pid is None
    finally:
        s.close()


def test_batches_count_exactly_what_memory_counts(tmp_path: Path) -> None:
    """16 threads record runs of 4 jobs at once, so batches mix starts, finishes and skips
    of many runs and jobs: the counters and last fields equal MemoryStore's."""
    stores: List[StateStore] = [behind(tmp_path / "state.db"), MemoryStore()]

    def work(t: int) -> None:
        for i in range(40):
            run = a_run(f"t{t}-{i}", job_id=f"job{t % 4}", started=t * 100 + i)
            outcome = "failed" if (t + i) % 7 == 0 else "completed"
            for s in stores:
                s.start_run(run)
                if i % 3:
                    s.record_skips(run.job_id, 2)
                error = "E" if outcome == "failed" else None
                s.finish_run(ended(run, outcome, took=0.25, error=error))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    sqlite_store, memory = stores
    try:
        assert sqlite_store.jobs() == memory.jobs()
        assert sqlite_store.totals() == memory.totals()
        assert sqlite_store.dropped_writes == 0 and sqlite_store.degraded is None
    finally:
        sqlite_store.close()


def test_a_run_finished_in_the_same_batch_as_an_older_abandoned_record_counts_once(
    tmp_path: Path,
) -> None:
    s = behind(tmp_path / "state.db")
    try:
        s.start_run(a_run("r1", pid=999_999_999))
        assert [r.run_id for r in s.abandon_dead_runs(lambda host, pid: False)] == ["r1"]
        s.finish_run(ended(a_run("r1", pid=999_999_999)))  # the process was not dead after all
        record = s.job("job")
        assert record is not None and (record.runs, record.failures) == (1, 1)
        assert s.get_run("r1").outcome == "abandoned"  # type: ignore[union-attr]
    finally:
        s.close()


def test_records_queued_at_exit_are_written(tmp_path: Path) -> None:
    """The writer thread is a daemon: an exit right after 300 records still stores them."""
    code = f"""
import sys
sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
from bgjobs.store import SQLiteStore
from test_store import a_run, ended
s = SQLiteStore({str(tmp_path / "state.db")!r}, write_behind=True)
for i in range(300):
    s.start_run(a_run(f"r{{i}}", started=i))
    s.finish_run(ended(a_run(f"r{{i}}", started=i)))
sys.exit(0)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    s = SQLiteStore(tmp_path / "state.db")
    try:
        assert s.job("job").runs == 300  # type: ignore[union-attr]
        assert {r.outcome for r in s.job_runs("job", limit=1000)} == {"completed"}
    finally:
        s.close()


def test_a_run_ending_during_interpreter_exit_is_written(tmp_path: Path) -> None:
    """A scheduled run that ends while the interpreter exits (a job the exit hook waited
    for) is the store's first write-behind: on Python 3.12+ no writer thread can start
    then, so the record is written by the caller instead of raising."""
    code = f"""
import sys, threading
sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
from bgjobs.store import SQLiteStore
from test_store import a_run, ended
s = SQLiteStore({str(tmp_path / "state.db")!r}, write_behind=True)
threading._register_atexit(lambda: s.finish_run(ended(a_run("late"))))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    s = SQLiteStore(tmp_path / "state.db")
    try:
        assert s.get_run("late") == ended(a_run("late"))
    finally:
        s.close()


def test_a_held_write_lock_degrades_and_counts_every_record_of_the_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bgjobs.store")
    path = tmp_path / "state.db"
    s = behind(path, busy_timeout=0.05, retry_interval=0)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        s.finish_run(ended(a_run("r1")))
        s.record_skips("job", 3)
        assert s.flush(10)
        assert s.degraded is not None and "is locked by another process" in s.degraded
        assert s.dropped_writes == 2
        assert store_warnings(caplog) == [s.degraded]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    s.finish_run(ended(a_run("r2")))
    assert s.flush(10) and s.degraded is None and s.get_run("r2") is not None
    s.close()


def test_a_manual_runs_finish_is_on_record_before_finish_run_returns(tmp_path: Path) -> None:
    """Only scheduled runs are written behind: someone waits for a manual or HTTP run's
    answer (an Idempotency-Key retry reads it from another process)."""
    s = behind(tmp_path / "state.db")
    other = SQLiteStore(tmp_path / "state.db")
    try:
        run = a_run("m1").__class__("m1", "job", "http", at(0), pid=4242, host="h1")
        s.start_run(run)
        s.finish_run(ended(run))
        assert other.get_run("m1") == ended(run)
    finally:
        s.close()
        other.close()


_SATURATE = """
import sys, threading, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from bgjobs.store import SQLiteStore
from test_store import a_run, ended
s = SQLiteStore({path!r}, write_behind=True)
end = time.monotonic() + 4

def write(t):
    i = 0
    while time.monotonic() < end:  # four busy threads: the GIL is contended too
        run = a_run(f"t{{t}}-{{i}}", job_id=f"job{{t}}", started=i)
        s.start_run(run)
        s.finish_run(ended(run))
        i += 1

threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
for thread in threads:
    thread.start()
print("ready", flush=True)
for thread in threads:
    thread.join()
s.close()
"""


def test_a_saturated_writer_leaves_the_file_to_other_processes(tmp_path: Path) -> None:
    """A process writing records as fast as it can must not hold the write lock back to back:
    another process's writes keep getting through, well within the busy timeout."""
    path = tmp_path / "state.db"
    SQLiteStore(path).close()  # create the schema first
    tests = str(Path(__file__).parent)
    busy = subprocess.Popen(
        [sys.executable, "-c", _SATURATE.format(root=ROOT, tests=tests, path=str(path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert busy.stdout is not None and busy.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the writer is saturated now
        s = SQLiteStore(path, busy_timeout=2.0)
        try:
            waits = []
            for i in range(20):
                started = time.monotonic()
                s.set_paused(f"other{i}", True)
                waits.append(time.monotonic() - started)
            assert s.degraded is None and s.dropped_writes == 0, s.degraded
            assert max(waits) < 2.0
        finally:
            s.close()
    finally:
        busy.wait(60)
    assert busy.returncode == 0
    assert os.path.exists(path)


def test_a_batch_of_successes_alone_counts_as_the_full_statement_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose batch holds successes alone is counted by a shorter statement: random
    batches (successes, failures, skips, runs left going, runs out of order) leave the
    jobs table exactly as the full statement leaves it, row for row."""
    import random

    from bgjobs import store as store_module
    from bgjobs._group_commit import Write

    stores = [SQLiteStore(tmp_path / "short.db"), SQLiteStore(tmp_path / "full.db")]
    short_rows = []
    shortening = [True]  # False: every delta goes through the full statement
    real_success_row = store_module._Delta.success_row

    def counted(delta: store_module._Delta) -> object:
        if not shortening[0]:
            return None
        row = real_success_row(delta)
        short_rows.append(row is not None)
        return row

    monkeypatch.setattr(store_module._Delta, "success_row", counted)
    rng = random.Random(1203)
    try:
        for batch_no in range(60):
            batch = []
            for i in range(rng.randrange(1, 30)):
                job_id = f"job{rng.randrange(8)}"
                run = a_run(f"b{batch_no}-{i}", job_id=job_id, started=rng.uniform(0, 5000))
                kind = rng.random()
                if kind < 0.1:
                    batch.append(Write("skips", (job_id, rng.randrange(1, 4))))
                elif kind < 0.2:
                    batch.append(Write("start", run))  # still going after the batch
                else:
                    failed = kind < 0.35
                    outcome = "failed" if failed else "completed"
                    done = ended(
                        run, outcome, took=rng.uniform(0, 3), error="E" if failed else None
                    )
                    batch += [Write("start", run), Write("finish", done)]
            for s, short in zip(stores, (True, False)):
                shortening[0] = short
                s._call(store_module._BatchRows(batch).write, None, write=True)
        tables = [
            s._call(
                lambda conn: conn.execute("SELECT * FROM jobs ORDER BY job_id").fetchall(),
                None,
                write=False,
            )
            for s in stores
        ]
        assert tables[0] == tables[1] and len(tables[0]) == 8
        assert stores[0].jobs() == stores[1].jobs()
        assert any(short_rows) and not all(short_rows)  # both statements were used
    finally:
        for s in stores:
            s.close()


def test_a_write_due_within_a_deadline_ends_the_gathering_early_and_a_later_one_keeps_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``within=``: the writer, gathering for its window (30 s here), commits by the
    earliest deadline of what it holds; a later deadline does not hold that commit back."""
    from bgjobs import _group_commit as group_commit

    monkeypatch.setattr(group_commit, "WINDOW", 30.0)
    batches: List[List[str]] = []
    committed = threading.Event()

    def commit(batch: List[group_commit.Write]) -> bool:
        batches.append([str(w.payload) for w in batch])
        committed.set()
        return True

    writer = group_commit.GroupCommit(commit, wait_timeout=10)
    try:
        writer.submit(group_commit.Write("x", "record"))  # starts a 30 s gathering
        writer.submit(group_commit.Write("x", "far"), within=3600)
        assert not committed.wait(0.3)
        began = time.monotonic()
        writer.submit(group_commit.Write("x", "near"), within=0.2)
        writer.submit(group_commit.Write("x", "later"), within=60)
        assert committed.wait(10)
        assert time.monotonic() - began >= 0.15  # by its deadline, not at once
        assert batches == [["record", "far", "near", "later"]]
    finally:
        writer.close()
