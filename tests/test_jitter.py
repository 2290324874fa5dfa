"""``jitter=``: each fire happens up to ``jitter`` seconds after its due time, by an amount
derived from the job and the due time (deterministic under a manual clock)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Callable, List

import pytest
from support_clock import ManualClock, caught_up

from bgjobs import InvalidScheduleError, JobRegistry, LocalJobManager, VercelJobManager
from bgjobs.policies import JobPolicy


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_fires_are_delayed_within_the_jitter_and_stay_on_the_grid(
    clock: ManualClock, manual_manager: LocalJobManager
) -> None:
    ran: List[float] = []
    manual_manager.schedule_job("j", "J", lambda: ran.append(clock.time()), 60, jitter=20)
    start, mono = clock.time(), clock.monotonic()
    policy = manual_manager._job("j").policy  # type: ignore[union-attr]
    assert policy is not None
    offsets = [policy.jitter_offset("j", mono + 60 * k) for k in (1, 2, 3)]
    assert all(0 <= o < 20 for o in offsets) and len(set(offsets)) == 3
    status = manual_manager.get_job_status("j")
    assert status is not None
    assert status.next_run is not None
    assert abs(status.next_run.timestamp() - (start + 60 + offsets[0])) < 1e-3
    for k in (1, 2, 3):
        clock.advance(60 * k + offsets[k - 1] - (clock.time() - start) - 0.25)
        caught_up(manual_manager._timers, clock)
        assert len(ran) == k - 1
        clock.advance(0.5)  # past it (0.25 s of slack for float rounding)
        caught_up(manual_manager._timers, clock)
        assert len(ran) == k
    late = [t - (start + 60 * k + o) for k, t, o in zip((1, 2, 3), ran, offsets)]
    assert all(0 <= x <= 0.5 for x in late), late
    runs = manual_manager.get_job_runs("j")[::-1]
    assert [round(r.scheduled_for.timestamp() - start) for r in runs] == [60, 120, 180]  # type: ignore[union-attr]
    assert manual_manager.get_job_metrics().skipped_executions == 0


def test_the_jitter_is_the_same_for_the_same_job_and_due_time() -> None:
    policy = JobPolicy(jitter=10)
    assert policy.jitter_offset("a", 1000.0) == policy.jitter_offset("a", 1000.0)
    assert policy.jitter_offset("a", 1000.0) != policy.jitter_offset("b", 1000.0)
    assert JobPolicy().jitter_offset("a", 1000.0) == 0.0


def test_a_jitter_as_long_as_the_interval_is_refused(manager: LocalJobManager) -> None:
    with pytest.raises(InvalidScheduleError, match=r"job 'j': jitter=60s must be less than"):
        manager.schedule_job("j", "J", lambda: None, 60, jitter=timedelta(minutes=1))
    with pytest.raises(InvalidScheduleError, match="job 'j': jitter must be"):
        manager.schedule_job("j", "J", lambda: None, 60, jitter=-1)
    jobs = JobRegistry()
    with pytest.raises(InvalidScheduleError, match=r"job 'r': jitter=90s must be less than"):
        jobs.interval("r", "R", minutes=1, jitter=90)(lambda: None)


def test_vercel_refuses_jitter() -> None:
    with pytest.raises(InvalidScheduleError, match=r"job 'j': Vercel .*jitter"):
        VercelJobManager(env={}).schedule_cron_job("j", "J", lambda: None, "0 * * * *", jitter=30)


def test_jitter_is_deterministic_on_the_testing_clock() -> None:
    from bgjobs.testing import ManualClock as TestingClock
    from bgjobs.testing import ManualJobManager

    def fire_times() -> List[float]:
        test_clock = TestingClock()
        ran: List[float] = []
        with ManualJobManager(test_clock) as manager:
            manager.schedule_job("j", "J", lambda: ran.append(test_clock.time()), 60, jitter=30)
            test_clock.advance(630)  # fires due at 60..600 s, each up to 30 s late
        return ran

    first = fire_times()
    assert len(first) == 10 and first == fire_times()
    assert len({round(t % 60, 3) for t in first}) > 1  # spread, not a constant offset
