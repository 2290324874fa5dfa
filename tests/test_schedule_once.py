"""``schedule_once``: a job that runs once, at a time or after a delay."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, List

import pytest
from support_clock import ManualClock, caught_up

from bgjobs import InvalidScheduleError, LocalJobManager, VercelJobManager


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_a_one_off_job_runs_once_after_its_delay(
    clock: ManualClock, manual_manager: LocalJobManager
) -> None:
    ran: List[float] = []
    manual_manager.schedule_once("once", "Once", lambda: ran.append(clock.time()), delay=30)
    status = manual_manager.get_job_status("once")
    start = clock.time()
    assert status is not None and status.status == "scheduled"
    assert status.next_run == datetime.fromtimestamp(start + 30, timezone.utc)
    assert status.schedule.startswith("once at ")
    clock.advance(29)
    caught_up(manual_manager._timers, clock)
    assert ran == []
    clock.advance(1)
    assert wait_until(lambda: len(ran) == 1)
    caught_up(manual_manager._timers, clock)
    for _ in range(3):
        clock.advance(3600)
        caught_up(manual_manager._timers, clock)
    assert ran == [start + 30]
    status = manual_manager.get_job_status("once")
    assert status is not None
    assert (status.status, status.next_run, status.runs) == ("completed", None, 1)
    assert manual_manager._timers.pending() == 0


def test_a_one_off_job_at_a_time(clock: ManualClock, manual_manager: LocalJobManager) -> None:
    ran: List[float] = []
    at = datetime.fromtimestamp(clock.time(), timezone.utc) + timedelta(minutes=5)
    manual_manager.schedule_once("once", "Once", lambda: ran.append(clock.time()), at=at)
    clock.advance(300)
    assert wait_until(lambda: ran == [at.timestamp()])
    [run] = manual_manager.get_job_runs("once")
    assert run.scheduled_for == at and run.trigger == "schedule"


def test_a_time_already_past_or_no_time_runs_at_once(
    clock: ManualClock, manual_manager: LocalJobManager
) -> None:
    ran: List[str] = []
    past = datetime.fromtimestamp(clock.time(), timezone.utc) - timedelta(hours=1)
    manual_manager.schedule_once("past", "Past", lambda: ran.append("past"), at=past)
    manual_manager.schedule_once("now", "Now", lambda: ran.append("now"))
    assert wait_until(lambda: sorted(ran) == ["now", "past"])


def test_a_one_off_past_its_misfire_grace_is_skipped(
    clock: ManualClock, manual_manager: LocalJobManager
) -> None:
    past = datetime.fromtimestamp(clock.time(), timezone.utc) - timedelta(hours=1)
    manual_manager.schedule_once("late", "Late", lambda: None, at=past, misfire_grace=60)
    assert wait_until(lambda: manual_manager.get_job_metrics().skipped_executions == 1)
    status = manual_manager.get_job_status("late")
    assert status is not None and status.runs == 0 and status.next_run is None


def test_bad_one_off_arguments_name_the_job(manager: LocalJobManager) -> None:
    with pytest.raises(ValueError, match="job 'j': at must be timezone-aware"):
        manager.schedule_once("j", "J", lambda: None, at=datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="job 'j': give at= or delay=, not both"):
        manager.schedule_once(
            "j", "J", lambda: None, at=datetime(2030, 1, 1, tzinfo=timezone.utc), delay=1
        )
    with pytest.raises(InvalidScheduleError, match="job 'j': delay must be"):
        manager.schedule_once("j", "J", lambda: None, delay=-5)
    with pytest.raises(TypeError, match="job 'j': at must be a datetime"):
        manager.schedule_once("j", "J", lambda: None, at="tomorrow")  # type: ignore[arg-type]


def test_vercel_refuses_one_off_jobs() -> None:
    with pytest.raises(InvalidScheduleError, match=r"job 'j': .*one-off"):
        VercelJobManager(env={}).schedule_once("j", "J", lambda: None, delay=5)


def test_a_one_off_job_runs_once_across_processes_sharing_the_store(
    clock: ManualClock, tmp_path: Path
) -> None:
    ran: List[str] = []
    at = datetime.fromtimestamp(clock.time(), timezone.utc) + timedelta(seconds=10)
    state = str(tmp_path)
    with LocalJobManager(clock=clock, env={}, state_dir=state) as first:
        first.schedule_once("once", "Once", lambda: ran.append("first"), at=at)
        clock.advance(10)
        assert wait_until(lambda: ran == ["first"])
        assert first.wait_idle(5)
    # A restart that declares the same one-off job does not run it again.
    with LocalJobManager(clock=clock, env={}, state_dir=state) as second:
        second.schedule_once("once", "Once", lambda: ran.append("second"), at=at)
        clock.advance(1)
        time.sleep(0.1)
        assert second.wait_idle(5)
    assert ran == ["first"]
