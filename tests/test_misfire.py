"""``misfire_grace=``: a fire later than the grace is skipped and counted; within it, it
runs once. The default keeps today's behaviour (a late fire runs). With the state store the
rule holds across restarts: never a flood of catch-up runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List, Tuple

from support_clock import ManualClock, caught_up

from bgjobs import LocalJobManager


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_a_fire_later_than_its_grace_is_skipped_and_counted(
    clock: ManualClock, manual_manager: LocalJobManager
) -> None:
    ran: List[float] = []
    manual_manager.schedule_job("j", "J", lambda: ran.append(clock.time()), 10, misfire_grace=2)
    start = clock.time()
    clock.advance(15)  # the timer comes 5 s late (a starved pool, a suspended machine)
    caught_up(manual_manager._timers, clock)
    assert ran == []
    status = manual_manager.get_job_status("j")
    assert status is not None and status.skips == 1 and status.runs == 0
    clock.advance(5)  # the next fire, due at +20, is on time
    caught_up(manual_manager._timers, clock)
    assert ran == [start + 20]


def test_a_fire_within_its_grace_runs(clock: ManualClock, manual_manager: LocalJobManager) -> None:
    ran: List[float] = []
    manual_manager.schedule_job("j", "J", lambda: ran.append(clock.time()), 10, misfire_grace=2)
    start = clock.time()
    clock.advance(12)
    caught_up(manual_manager._timers, clock)
    assert ran == [start + 12]


def test_without_a_grace_a_late_fire_runs_as_before(
    clock: ManualClock, manual_manager: LocalJobManager
) -> None:
    ran: List[float] = []
    manual_manager.schedule_job("j", "J", lambda: ran.append(clock.time()), 10)
    clock.advance(15)
    caught_up(manual_manager._timers, clock)
    assert len(ran) == 1


def _restart_after(
    clock: ManualClock, tmp_path: Path, down: float, grace: float
) -> Tuple[List[float], int, float]:
    """Run a 60 s job with ``grace`` in one manager, stop it, wait ``down`` seconds, start
    another on the same state directory: (runs of the second, its skips, restart time)."""
    state = str(tmp_path / "state")
    with LocalJobManager(clock=clock, env={}, state_dir=state) as first:
        first.schedule_job("j", "J", lambda: None, 60, misfire_grace=grace)
        clock.advance(60)
        assert wait_until(lambda: first.get_job_status("j").runs == 1)  # type: ignore[union-attr]
        assert first.wait_idle(5)
    clock.advance(down)
    ran: List[float] = []
    restarted = clock.time()
    with LocalJobManager(clock=clock, env={}, state_dir=state, max_workers=1) as second:
        before = second.get_job_metrics().skipped_executions
        second.schedule_job("j", "J", lambda: ran.append(clock.time()), 60, misfire_grace=grace)
        time.sleep(0.05)
        caught_up(second._timers, clock)
        skips = second.get_job_metrics().skipped_executions - before
        assert second.wait_idle(5)
    return ran, skips, restarted


def test_after_a_restart_a_missed_fire_within_the_grace_runs_once(
    clock: ManualClock, tmp_path: Path
) -> None:
    # Down for 10 min: fires at +120 ... +660 were missed; +660 is 10 s old (grace 30 s).
    ran, skips, restarted = _restart_after(clock, tmp_path, 610, grace=30)
    assert ran == [restarted]  # once, at once: no flood
    assert skips == 9


def test_after_a_restart_fires_older_than_the_grace_are_skipped_and_counted(
    clock: ManualClock, tmp_path: Path
) -> None:
    ran, skips, _ = _restart_after(clock, tmp_path, 640, grace=5)
    assert ran == []  # +660 is 10 s old: past the grace; the next fire is at +720
    assert skips == 10
