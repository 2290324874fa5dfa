"""Many processes, one host: each scheduled fire runs once, and a dead runner is replaced.

Real processes: gunicorn with four sync workers, plain scripts, and — for the hand-over
rules — two managers in this process sharing a lock directory (``flock`` locks belong to
open files, so two managers exclude each other exactly like two processes).

How "each fire once" is checked: every run records ``next_run``, the due time its tick
armed next. Each fire arms a different one, so the same value twice would be one fire run
twice; and since runs never start before their due time, distinct due times on the grid
also mean no two runs closer than the grid allows — whatever the machine's load does to
the moment a tick actually runs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
from support_mp import (
    Line,
    gunicorn,
    python_script,
    read_line,
    read_lines,
    wait_for,
)

from bgjobs._local.hostlock import lock_file_name
from bgjobs.local import CATCH_UP_WINDOW, LocalJobManager

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX processes")

INTERVAL = 0.2


def assert_each_fire_ran_once(lines: List[Line], interval: float) -> int:
    """Check ``lines`` (runs of one interval job, any processes) ran each fire at most once;
    return how many fires they cover (runs plus fires coalesced between them)."""
    runs = sorted(lines, key=lambda line: line.time)
    nexts = [line.next_due for line in runs]
    assert all(n is not None for n in nexts), runs
    dues = [n - interval for n in nexts if n is not None]
    # One run per fire: strictly increasing due times, a whole number of intervals apart.
    for (a, b), (run_a, run_b) in zip(zip(dues, dues[1:]), zip(runs, runs[1:])):
        steps = (b - a) / interval
        assert steps > 0.9 and abs(steps - round(steps)) < 0.05, (run_a, run_b)
    # Never early: a run starts at or after its due time (float slack for clock reads).
    for run, due in zip(runs, dues):
        assert run.time >= due - 0.005, (run, due)
    # The plain check "no two lines within half an interval", except after a run that
    # itself ran late (a busy machine delays a tick; the next one is on time again).
    for (a, b), due_a in zip(zip(runs, runs[1:]), dues):
        lateness = a.time - due_a
        assert b.time - a.time >= interval / 2 - lateness, (a, b)
    return round((dues[-1] - dues[0]) / interval) + 1 if dues else 0


# -- gunicorn ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True], ids=["app-per-worker", "preload"])
def test_gunicorn_workers_run_each_fire_once_and_replace_a_killed_runner(
    tmp_path: Path, preload: bool
) -> None:
    ticks = tmp_path / "ticks.txt"
    env = {
        "TICKER_FILE": str(ticks),
        "TICKER_INTERVAL": str(INTERVAL),
        "BGJOBS_LOCK_DIR": str(tmp_path / "locks"),
    }
    with gunicorn(tmp_path, "ticker:app", env=env, workers=4, preload=preload) as server:
        assert wait_for(lambda: len(read_lines(ticks)) >= 3, 20), server.log_text()
        time.sleep(0.5)  # past the hand-over from the arbiter (--preload)
        start = time.time()
        time.sleep(3.3)
        window = [line for line in read_lines(ticks) if start <= line.time < start + 3.0]
        writers = {line.pid for line in window}
        assert len(writers) == 1, window
        (writer,) = writers
        assert writer in server.booted_workers() and writer != server.master_pid
        fires = assert_each_fire_ran_once(window, INTERVAL)
        assert 13 <= fires <= 17, window  # one runner: 3 s / 0.2 s, give or take the edges
        assert len(window) <= fires

        killed_at = time.time()
        os.kill(writer, signal.SIGKILL)

        def new_lines() -> List[Line]:
            return [line for line in read_lines(ticks) if line.time > killed_at]

        assert wait_for(lambda: any(line.pid != writer for line in new_lines()), 8), (
            server.log_text()
        )
        takeover = min(line.time for line in new_lines()) - killed_at
        assert takeover < 5.0
        time.sleep(1.0)
        after = new_lines()
        assert writer not in {line.pid for line in after}
        assert len({line.pid for line in after}) == 1, after
        # Across the hand-over too: the new runner continued the grid, repeating no fire.
        assert_each_fire_ran_once(read_lines(ticks), INTERVAL)


# -- trigger_job across processes --------------------------------------------------------------


@pytest.mark.slow
def test_trigger_job_in_another_process_returns_false_while_the_job_runs(tmp_path: Path) -> None:
    lock_dir, marker, release = tmp_path / "locks", tmp_path / "running", tmp_path / "release"
    ran_here: List[int] = []
    with python_script(
        "holder.py", str(lock_dir), str(marker), str(release), log=tmp_path / "holder.log"
    ) as holder:
        assert read_line(holder, 20) == "ready"
        manager = LocalJobManager(env={}, lock_dir=lock_dir)
        try:
            manager.schedule_job("report", "Report", lambda: ran_here.append(1), 3600)
            assert wait_for(marker.exists, 20)  # process A is inside the job now

            assert manager.trigger_job("report") is False
            status = manager.get_job_status("report")
            assert status is not None
            assert status.skips == 1 and status.runs == 0
            assert status.runner == f"standby; leader is pid {holder.pid}"
            assert manager.get_job_metrics().skipped_executions == 1

            release.touch()
            assert read_line(holder, 20) == "ran True"
            assert read_line(holder, 20) == f"runner this process (pid {holder.pid})"
            assert wait_for(lambda: manager.trigger_job("report"), 10)  # free again
            assert ran_here == [1]
        finally:
            manager.shutdown(timeout=5)


# -- hand-over rules (two managers in this process, like two processes) ----------------------


class Recorder:
    """A job function recording (who, when, next_run) for every run."""

    def __init__(self, who: str, manager: LocalJobManager, job_id: str, shared: List[Line]):
        self.who, self.manager, self.job_id, self.shared = who, manager, job_id, shared

    def __call__(self) -> None:
        status = self.manager.get_job_status(self.job_id)
        nxt = status.next_run.timestamp() if status and status.next_run else None
        self.shared.append(Line(hash(self.who), time.time(), self.who, nxt))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[List[LocalJobManager]]:
    managers = [LocalJobManager(env={}, lock_dir=tmp_path / "locks") for _ in range(2)]
    yield managers
    for manager in managers:
        manager.shutdown(timeout=5)


def _schedule_both(
    pair: List[LocalJobManager], job_id: str, interval: float, runs: List[Line]
) -> None:
    for who, manager in zip("ab", pair):
        manager.schedule_job(job_id, "Job", Recorder(who, manager, job_id, runs), interval)


def test_one_manager_runs_the_schedule_the_other_stands_by(pair: List[LocalJobManager]) -> None:
    a, b = pair
    runs: List[Line] = []
    _schedule_both(pair, "beat", 0.1, runs)
    assert wait_for(lambda: len(runs) >= 8, 10)
    assert {run.event for run in runs} == {"a"}
    assert_each_fire_ran_once(runs, 0.1)
    status_a, status_b = a.get_job_status("beat"), b.get_job_status("beat")
    assert status_a is not None and status_b is not None
    assert status_a.runner == f"this process (pid {os.getpid()})"
    assert (
        status_b.runner == f"standby; another manager in this process (pid {os.getpid()}) runs it"
    )
    # The standby shows the host's truth from the shared state store, not its own zeros.
    assert status_b.status == "completed" and status_b.runs >= 8
    assert abs(status_b.runs - status_a.runs) <= 1 and status_b.last_run is not None
    assert status_b.next_run is not None  # the leader's next due time


@pytest.mark.parametrize("how", ["shutdown", "stop_job", "stop_all_jobs"])
def test_standby_takes_over_when_the_runner_stops_and_continues_its_grid(
    pair: List[LocalJobManager], how: str
) -> None:
    a, b = pair
    runs: List[Line] = []
    _schedule_both(pair, "beat", 0.1, runs)
    assert wait_for(lambda: len(runs) >= 3, 10)
    stopped_at = time.time()
    if how == "shutdown":
        a.shutdown()
    elif how == "stop_job":
        a.stop_job("beat")
    else:
        a.stop_all_jobs()
    assert wait_for(lambda: any(run.event == "b" for run in runs), 5)
    took_over = min(run.time for run in runs if run.event == "b") - stopped_at
    assert took_over < 3.0  # one election round (1 s), plus slack for a busy machine
    count = len(runs)
    assert wait_for(lambda: len(runs) >= count + 3, 5)
    assert all(run.event == "a" for run in runs if run.time < stopped_at)
    assert all(run.event == "b" for run in runs if run.time > stopped_at + 0.05)
    assert_each_fire_ran_once(list(runs), 0.1)
    status = b.get_job_status("beat")
    assert status is not None and status.runner == f"this process (pid {os.getpid()})"


def test_leadership_is_per_job(pair: List[LocalJobManager]) -> None:
    a, b = pair
    ran: List[str] = []
    a.schedule_job("only-a", "A", lambda: ran.append("a"), 0.05)
    b.schedule_job("only-b", "B", lambda: ran.append("b"), 0.05)
    assert wait_for(lambda: {"a", "b"} <= set(ran), 5)


def test_a_cron_job_runs_once_per_fire(pair: List[LocalJobManager]) -> None:
    runs: List[Tuple[str, float]] = []
    for who, manager in zip("ab", pair):
        manager.schedule_cron_job(
            "every-second", "Cron", lambda who=who: runs.append((who, time.time())), "* * * * * *"
        )
    assert wait_for(lambda: len(runs) >= 3, 10)
    done = list(runs)
    assert len({who for who, _ in done}) == 1
    span = done[-1][1] - done[0][1]
    assert len(done) <= span + 1.5  # one run per second; two runners would double it


def _write_record(lock_dir: Path, job_id: str, schedule: str, next_due: float) -> None:
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    record = f'{{"pid": 1, "job": "{job_id}", "schedule": "{schedule}", "next": {next_due!r}}}'
    (lock_dir / lock_file_name("schedule", job_id)).write_text(record + "\n")


def _first_run(tmp_path: Path, interval: float, timeout: float = 5.0) -> Tuple[float, int]:
    """Schedule job "x" on a fresh manager; (seconds until its first run, its skips)."""
    started = time.time()
    first: List[float] = []
    manager = LocalJobManager(env={}, lock_dir=tmp_path / "locks")
    try:
        manager.schedule_job("x", "X", lambda: first.append(time.time()), interval)
        assert wait_for(lambda: bool(first), timeout)
        status = manager.get_job_status("x")
        assert status is not None
        return first[0] - started, status.skips
    finally:
        manager.shutdown(timeout=5)


def test_new_leader_keeps_the_pending_fire_of_the_previous_one(tmp_path: Path) -> None:
    _write_record(tmp_path / "locks", "x", "every 30s", time.time() + 0.3)
    delay, skips = _first_run(tmp_path, 30)
    assert 0.25 <= delay < 2.0 and skips == 0  # not 30 s: the grid goes on


def test_new_leader_runs_a_fire_missed_during_the_hand_over_at_once(tmp_path: Path) -> None:
    _write_record(tmp_path / "locks", "x", "every 30s", time.time() - 2.0)
    delay, skips = _first_run(tmp_path, 30)
    assert delay < 2.0 and skips == 0  # at once, not 30 s later


def test_missed_fire_right_before_the_next_one_is_coalesced_into_it(tmp_path: Path) -> None:
    # Missed 1.7 s ago on a 2 s grid: the next fire is 0.3 s away, so one run, then.
    _write_record(tmp_path / "locks", "x", "every 2s", time.time() - 1.7)
    delay, skips = _first_run(tmp_path, 2)
    assert 0.2 <= delay < 1.5 and skips == 1


@pytest.mark.parametrize(
    "schedule, offset",
    [
        ("every 1s", -(CATCH_UP_WINDOW + 5)),  # nobody ran it for a while: fresh start
        ("every 5s", -0.5),  # the schedule changed since
        ("every 1s", +50),  # a due time beyond one interval: a clock stepped back
    ],
)
def test_stale_or_foreign_record_starts_the_schedule_afresh(
    tmp_path: Path, schedule: str, offset: float
) -> None:
    _write_record(tmp_path / "locks", "x", schedule, time.time() + offset)
    delay, skips = _first_run(tmp_path, 1)
    assert 0.9 <= delay < 2.5 and skips == 0  # one interval after scheduling


def test_unreadable_record_starts_afresh(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    (lock_dir / "schedule-x.lock").write_bytes(b"\x00garbage{")
    delay, _ = _first_run(tmp_path, 1)
    assert 0.9 <= delay < 2.5


def test_trigger_job_is_refused_while_the_other_manager_runs_it(
    pair: List[LocalJobManager],
) -> None:
    a, b = pair
    inside, release = threading.Event(), threading.Event()

    def job() -> None:
        inside.set()
        release.wait(10)

    for manager in pair:
        manager.schedule_job("slow", "Slow", job, 3600)
    worker = threading.Thread(target=a.trigger_job, args=("slow",))
    worker.start()
    try:
        assert inside.wait(5)
        assert b.trigger_job("slow") is False
        status: Optional[object] = b.get_job_status("slow")
        assert status is not None and b.get_job_metrics().skipped_executions == 1
    finally:
        release.set()
        worker.join(10)
    assert b.trigger_job("slow") is True


def test_replacing_a_job_in_the_same_manager_starts_a_new_schedule(tmp_path: Path) -> None:
    manager = LocalJobManager(env={}, lock_dir=tmp_path / "locks")
    try:
        manager.schedule_job("x", "X", lambda: None, 0.3)
        time.sleep(0.2)
        before = time.time()
        manager.schedule_job("x", "X v2", lambda: None, 0.3)
        after = time.time()
        status = manager.get_job_status("x")
        assert status is not None and status.next_run is not None
        # One interval after the replacement (as without a lock directory), not the old
        # grid, whose next fire is about 0.1 s after `before`.
        assert before + 0.3 - 0.01 <= status.next_run.timestamp() <= after + 0.3 + 0.01
    finally:
        manager.shutdown(timeout=5)
