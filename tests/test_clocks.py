"""Intervals and clocks (issue 12, items 7-9; issue 11, fault 2): a clock that counts
suspend, missed fires counted exactly and attributed, due times exactly on their grid."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, List

import pytest
from freezegun import freeze_time
from support_clock import ManualClock
from support_mp import python_script, read_line, wait_for

from bgjobs import LocalJobManager
from bgjobs.schedules import SUSPEND_CLOCK, IntervalSchedule, SystemClock


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# --- 7. a clock that keeps counting while the machine is suspended -----------------------


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="Linux only")
def test_the_system_clock_counts_suspend_on_linux() -> None:
    assert SUSPEND_CLOCK == time.CLOCK_BOOTTIME
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    reading = SystemClock().monotonic()
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert before <= reading <= after


def test_the_system_clock_stays_real_and_counts_suspend_under_freezegun() -> None:
    with freeze_time("2026-01-01T00:00:00Z"):
        reading = SystemClock().monotonic()
    if SUSPEND_CLOCK is not None:
        assert abs(reading - time.clock_gettime(SUSPEND_CLOCK)) < 1.0


# --- 8. missed fires are counted exactly, and the log says why they were missed ----------


class Calls:
    def __init__(self, action: Callable[[], object] = lambda: None) -> None:
        self.count = 0
        self._action = action
        self._cond = threading.Condition()

    def __call__(self) -> None:
        self._action()
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= count, timeout)


def _skips(manager: LocalJobManager, job_id: str) -> int:
    status = manager.get_job_status(job_id)
    assert status is not None
    return status.skips


@pytest.mark.parametrize("kind", ["interval", "cron"])
def test_a_days_pause_runs_once_and_counts_every_missed_fire_exactly(
    clock: ManualClock, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    calls = Calls()
    try:
        if kind == "interval":
            manager.schedule_job("beat", "Beat", calls, 1)
        else:
            clock.step(-(clock.time() % 1))  # the wall clock on a whole second
            manager.schedule_cron_job("beat", "Beat", calls, "* * * * * *")
        with caplog.at_level(logging.INFO, logger="bgjobs"):
            clock.advance(86400)  # SIGSTOP, or a suspend the clock counts, for a day
            assert calls.wait_for(1)
            assert wait_until(lambda: _skips(manager, "beat") > 0)
        assert calls.count == 1  # one catch-up run, never a flood
        assert _skips(manager, "beat") == 86399  # every other due time, not 1,000
        messages = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert len(messages) == 1
        assert "its timer came up 8.64e+04 s late: this process was paused" in messages[0]
        assert "still running" not in messages[0]
    finally:
        manager.stop_all_jobs(wait=True, timeout=5)


def test_fires_that_wait_for_a_busy_worker_say_so(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    release, started = threading.Event(), threading.Event()
    blocker = Calls(lambda: (started.set(), release.wait(5)))
    beat = Calls()
    try:
        manager.schedule_job("blocker", "Blocker", blocker, 1800)
        manager.schedule_job("beat", "Beat", beat, 3600)
        with caplog.at_level(logging.INFO, logger="bgjobs"):
            clock.advance(1800)
            assert started.wait(5)  # the blocker holds the only worker
            clock.advance(1800)  # beat's fire is handed over on time, and queues
            assert wait_until(lambda: len(manager._timers._tasks) >= 1)
            clock.advance(3 * 3600)  # while it waits for the worker
            release.set()
            assert beat.wait_for(1)
            assert wait_until(lambda: _skips(manager, "beat") == 3)
        messages = [r.getMessage() for r in caplog.records if "'beat': skipped" in r.getMessage()]
        assert len(messages) == 1 and "every worker was busy" in messages[0], messages
    finally:
        release.set()
        manager.stop_all_jobs(wait=True, timeout=5)


def test_a_one_millisecond_interval_after_a_long_pause_costs_no_loop(clock: ManualClock) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    calls = Calls()
    try:
        manager.schedule_job("fast", "Fast", calls, 0.001)
        started = time.process_time()
        clock.advance(86400)  # 86.4 million due times
        assert calls.wait_for(1)
        assert wait_until(lambda: _skips(manager, "fast") > 0)
        assert time.process_time() - started < 2.0
        assert _skips(manager, "fast") in range(86_399_990, 86_400_000)
        manager.stop_job("fast")
    finally:
        manager.stop_all_jobs(wait=True, timeout=5)


# --- 9. due times are anchor + k x interval, exactly -------------------------------------


def test_due_times_are_exactly_anchor_plus_k_intervals_however_many_ticks() -> None:
    schedule = IntervalSchedule(0.1)
    anchor = 1234.5678
    due = schedule.first_due(anchor)
    ticks: List[float] = [due]
    for _ in range(200_000):
        due, missed = schedule.next_due(due, due)
        assert missed == 0
        ticks.append(due)
    assert due == anchor + 200_001 * 0.1  # not a sum of 200,001 roundings
    assert ticks[12345] == anchor + 12346 * 0.1


def test_a_late_tick_lands_back_on_the_grid_exactly() -> None:
    schedule = IntervalSchedule(0.3)
    anchor = 10.0
    due = schedule.first_due(anchor)
    due, missed = schedule.next_due(due, anchor + 1000.05)
    assert (due, missed) == (anchor + 3334 * 0.3, 3332)


def test_a_due_time_from_another_grid_becomes_the_anchor() -> None:
    schedule = IntervalSchedule(10.0)
    schedule.first_due(0.0)
    assert schedule.next_due(5.0, 5.0) == (15.0, 0)  # taken over: that grid, from then on
    assert schedule.next_due(15.0, 15.0) == (25.0, 0)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")
def test_a_process_paused_with_sigstop_runs_once_and_says_its_timer_was_late(
    tmp_path: Path,
) -> None:
    # Real time: the one scenario a manual clock cannot play (a real SIGSTOP and SIGCONT).
    log = tmp_path / "stderr.log"
    with python_script("paused.py", log=log) as proc:
        assert read_line(proc, 10).startswith("run")
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(1.5)  # 7 due times pass while it is stopped
        os.kill(proc.pid, signal.SIGCONT)
        skips = 0
        while skips == 0:
            skips = int(read_line(proc, 10).split()[1])
        assert 5 <= skips <= 9
        assert wait_for(lambda: "skipped" in log.read_text(), 5)
    lines = [line for line in log.read_text().splitlines() if "'beat': skipped" in line]
    assert len(lines) == 1, lines
    assert "its timer came up" in lines[0] and "this process was paused" in lines[0]
