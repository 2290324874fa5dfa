"""Many processes, one host: each scheduled fire runs once, and a dead runner is replaced.

Real processes: gunicorn with four sync workers, plain scripts, and — for the hand-over
rules — two managers in this process sharing a lock directory (``flock`` locks belong to
open files, so two managers exclude each other exactly like two processes) and a
:class:`ManualClock`, so each fire happens when the test moves the clock.

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
from support_clock import ManualClock, caught_up
from support_mp import (
    Line,
    gunicorn,
    python_script,
    read_line,
    read_lines,
    wait_for,
)

import bgjobs._local.leadership as leadership
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

        def worker_lines() -> List[Line]:
            return [line for line in read_lines(ticks) if line.pid != server.master_pid]

        # With --preload the arbiter runs the schedule until it forks, then hands it to a
        # worker; from a worker's first run on, one worker runs it. The window opens there.
        assert wait_for(lambda: bool(worker_lines()), 20), server.log_text()
        start = worker_lines()[0].time
        assert wait_for(lambda: read_lines(ticks)[-1].time >= start + 1.6, 20)
        window = [line for line in read_lines(ticks) if start <= line.time < start + 1.6]
        writers = {line.pid for line in window}
        assert len(writers) == 1, window
        (writer,) = writers
        assert writer in server.booted_workers() and writer != server.master_pid
        fires = assert_each_fire_ran_once(window, INTERVAL)
        assert 6 <= fires <= 10, window  # one runner: 1.6 s / 0.2 s, give or take the edges
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
        assert wait_for(lambda: len(new_lines()) >= 4, 10)  # a few runs of the new runner
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

    def __init__(self, who: str, manager: LocalJobManager, job_id: str, shared: List[Line]) -> None:
        self.who, self.manager, self.job_id, self.shared = who, manager, job_id, shared

    def __call__(self) -> None:
        status = self.manager.get_job_status(self.job_id)
        nxt = status.next_run.timestamp() if status and status.next_run else None
        now = status.last_run.timestamp() if status and status.last_run else -1.0
        self.shared.append(Line(hash(self.who), now, self.who, nxt))


@pytest.fixture
def pair(tmp_path: Path, clock: ManualClock) -> Iterator[List[LocalJobManager]]:
    """Two managers sharing a lock directory and ``clock``, one worker each."""
    managers = [
        LocalJobManager(clock=clock, env={}, lock_dir=tmp_path / "locks", max_workers=1)
        for _ in range(2)
    ]
    yield managers
    for manager in managers:
        manager.shutdown(timeout=5)


def step(
    managers: List[LocalJobManager], clock: ManualClock, seconds: float, times: int = 1
) -> None:
    """Move ``clock`` on, ``times`` times; each time wait until every manager's due ticks ran."""
    for _ in range(times):
        clock.advance(seconds)
        for manager in managers:
            caught_up(manager._timers, clock)


def _schedule_both(
    pair: List[LocalJobManager], job_id: str, interval: float, runs: List[Line]
) -> None:
    for who, manager in zip("ab", pair):
        manager.schedule_job(job_id, "Job", Recorder(who, manager, job_id, runs), interval)


def test_one_manager_runs_the_schedule_the_other_stands_by(
    pair: List[LocalJobManager], clock: ManualClock
) -> None:
    a, b = pair
    runs: List[Line] = []
    _schedule_both(pair, "beat", 0.25, runs)
    step(pair, clock, 0.25, times=8)
    assert len(runs) == 8
    assert {run.event for run in runs} == {"a"}
    assert assert_each_fire_ran_once(runs, 0.25) == 8
    status_a, status_b = a.get_job_status("beat"), b.get_job_status("beat")
    assert status_a is not None and status_b is not None
    assert status_a.runner == f"this process (pid {os.getpid()})"
    assert (
        status_b.runner == f"standby; another manager in this process (pid {os.getpid()}) runs it"
    )
    # The standby shows the host's truth from the shared state store, not its own zeros.
    assert status_b.status == "completed" and status_b.runs == status_a.runs == 8
    assert status_b.last_run == status_a.last_run is not None
    assert status_b.next_run is not None  # the leader's next due time, as last read


@pytest.mark.parametrize("how", ["shutdown", "stop_job", "stop_all_jobs"])
def test_standby_takes_over_when_the_runner_stops_and_continues_its_grid(
    pair: List[LocalJobManager], clock: ManualClock, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Elections are real-time (a thread retries every ELECTION_INTERVAL); the gunicorn
    # test above takes over at the real pace.
    monkeypatch.setattr(leadership, "ELECTION_INTERVAL", 0.02)
    a, b = pair
    runs: List[Line] = []
    _schedule_both(pair, "beat", 0.25, runs)
    step(pair, clock, 0.25, times=3)
    step(pair, clock, 0.125)  # between two fires: a fresh schedule would be off the grid
    if how == "shutdown":
        a.shutdown()
    elif how == "stop_job":
        a.stop_job("beat")
    else:
        a.stop_all_jobs()
    me = f"this process (pid {os.getpid()})"
    assert wait_for(lambda: b.get_job_status("beat").runner == me, 5)  # type: ignore[union-attr]
    step(pair, clock, 0.125)
    step(pair, clock, 0.25, times=2)
    assert [run.event for run in runs] == ["a"] * 3 + ["b"] * 3
    assert assert_each_fire_ran_once(list(runs), 0.25) == 6  # no fire lost, none repeated


def test_leadership_is_per_job(pair: List[LocalJobManager], clock: ManualClock) -> None:
    a, b = pair
    ran: List[str] = []
    a.schedule_job("only-a", "A", lambda: ran.append("a"), 0.25)
    b.schedule_job("only-b", "B", lambda: ran.append("b"), 0.25)
    step(pair, clock, 0.25)
    assert sorted(ran) == ["a", "b"]


def test_a_cron_job_runs_once_per_fire(pair: List[LocalJobManager], clock: ManualClock) -> None:
    runs: List[Tuple[str, float]] = []
    for who, manager in zip("ab", pair):
        manager.schedule_cron_job(
            "every-second", "Cron", lambda who=who: runs.append((who, clock.time())), "* * * * * *"
        )
    start = clock.time()  # a whole second: the first fire is one second later
    step(pair, clock, 1.0, times=3)
    assert len({who for who, _ in runs}) == 1
    assert [t for _, t in runs] == [start + 1, start + 2, start + 3]


def _write_record(lock_dir: Path, job_id: str, schedule: str, next_due: float) -> None:
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    record = f'{{"pid": 1, "job": "{job_id}", "schedule": "{schedule}", "next": {next_due!r}}}'
    (lock_dir / lock_file_name("schedule", job_id)).write_text(record + "\n")


def _take_over(
    tmp_path: Path, clock: ManualClock, interval: float, first_run: float
) -> Tuple[float, int]:
    """Schedule job "x" on a fresh manager sharing the lock directory; check that its first
    run is due ``first_run`` seconds from now and comes exactly then (0: at once).
    Returns that run's (due time, skips counted)."""
    started = clock.time()
    first: List[float] = []
    manager = LocalJobManager(env={}, clock=clock, lock_dir=tmp_path / "locks", max_workers=1)
    try:
        manager.schedule_job("x", "X", lambda: first.append(clock.time()), interval)
        if first_run > 0:
            status = manager.get_job_status("x")
            assert status is not None and status.next_run is not None
            assert status.next_run.timestamp() == started + first_run
            step([manager], clock, first_run / 2)
            assert first == [], "ran before its due time"
            step([manager], clock, first_run / 2)
        else:
            caught_up(manager._timers, clock)
        assert first == [started + first_run]
        status = manager.get_job_status("x")
        assert status is not None
        return first[0], status.skips
    finally:
        manager.shutdown(timeout=5)


def test_new_leader_keeps_the_pending_fire_of_the_previous_one(
    tmp_path: Path, clock: ManualClock
) -> None:
    _write_record(tmp_path / "locks", "x", "every 30s", clock.time() + 0.25)
    _, skips = _take_over(tmp_path, clock, 30, first_run=0.25)  # not 30 s: the grid goes on
    assert skips == 0


def test_new_leader_runs_a_fire_missed_during_the_hand_over_at_once(
    tmp_path: Path, clock: ManualClock
) -> None:
    _write_record(tmp_path / "locks", "x", "every 30s", clock.time() - 2.0)
    _, skips = _take_over(tmp_path, clock, 30, first_run=0)  # at once, not 30 s later
    assert skips == 0


def test_missed_fire_right_before_the_next_one_is_coalesced_into_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    # Missed 1.75 s ago on a 2 s grid: the next fire is 0.25 s away, so one run, then.
    _write_record(tmp_path / "locks", "x", "every 2s", clock.time() - 1.75)
    _, skips = _take_over(tmp_path, clock, 2, first_run=0.25)
    assert skips == 1


@pytest.mark.parametrize(
    "schedule, offset",
    [
        ("every 1s", -(CATCH_UP_WINDOW + 5)),  # nobody ran it for a while: fresh start
        ("every 5s", -0.5),  # the schedule changed since
        ("every 1s", +50),  # a due time beyond one interval: a clock stepped back
    ],
)
def test_stale_or_foreign_record_starts_the_schedule_afresh(
    tmp_path: Path, clock: ManualClock, schedule: str, offset: float
) -> None:
    _write_record(tmp_path / "locks", "x", schedule, clock.time() + offset)
    _, skips = _take_over(tmp_path, clock, 1, first_run=1)  # one interval after scheduling
    assert skips == 0


def test_unreadable_record_starts_afresh(tmp_path: Path, clock: ManualClock) -> None:
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    (lock_dir / "schedule-x.lock").write_bytes(b"\x00garbage{")
    _take_over(tmp_path, clock, 1, first_run=1)


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


def test_replacing_a_job_in_the_same_manager_starts_a_new_schedule(
    tmp_path: Path, clock: ManualClock
) -> None:
    manager = LocalJobManager(env={}, clock=clock, lock_dir=tmp_path / "locks")
    try:
        manager.schedule_job("x", "X", lambda: None, 1.0)
        clock.advance(0.75)
        manager.schedule_job("x", "X v2", lambda: None, 1.0)
        status = manager.get_job_status("x")
        assert status is not None and status.next_run is not None
        # One interval after the replacement (as without a lock directory), not the old
        # grid, whose next fire is 0.25 s away.
        assert status.next_run.timestamp() == clock.time() + 1.0
    finally:
        manager.shutdown(timeout=5)
