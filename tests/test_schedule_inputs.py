"""Bad intervals fail with InvalidScheduleError naming the job, when declared or scheduled;
a failed replacement puts the old job back exactly as it was (issues 11 and 12)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from support_clock import ManualClock

from bgjobs import InvalidScheduleError, JobRegistry, LocalJobManager
from bgjobs.schedules import MAX_INTERVAL, MIN_INTERVAL, parse_interval


def noop() -> None:
    pass


BAD_INTERVALS = [
    pytest.param(10**400, "positive, finite", id="int-too-big-for-a-float"),
    pytest.param(1e12, "longer than the maximum", id="1e12"),
    pytest.param(1e300, "longer than the maximum", id="1e300"),
    pytest.param(timedelta.max, "longer than the maximum", id="timedelta.max"),
    pytest.param(timedelta(days=999999999), "longer than the maximum", id="999999999-days"),
    pytest.param(5e-324, "shorter than the minimum", id="smallest-float"),
    pytest.param(1e-9, "shorter than the minimum", id="1ns"),
    pytest.param(timedelta(microseconds=1), "shorter than the minimum", id="1us"),
    pytest.param(float("nan"), "positive, finite", id="nan"),
    pytest.param(-1, "positive, finite", id="negative"),
]


@pytest.mark.parametrize(("interval", "reason"), BAD_INTERVALS)
def test_a_bad_interval_is_refused_naming_the_job(interval: Any, reason: str) -> None:
    with pytest.raises(InvalidScheduleError, match=f"job 'sync': interval .*{reason}"):
        parse_interval("sync", interval)


@pytest.mark.parametrize(("interval", "reason"), BAD_INTERVALS)
def test_a_registry_refuses_a_bad_interval_at_declaration(interval: Any, reason: str) -> None:
    jobs = JobRegistry()
    with pytest.raises(InvalidScheduleError, match=f"job 'sync'.*{reason}"):
        jobs.add_interval("sync", "Sync", noop, interval)
    assert "sync" not in jobs


def test_a_registry_refuses_unit_arguments_too_large_for_a_timedelta() -> None:
    jobs = JobRegistry()
    with pytest.raises(InvalidScheduleError, match=r"job 'sync'.*maximum"):
        jobs.interval("sync", "Sync", days=1e12)
    with pytest.raises(InvalidScheduleError, match=r"job 'sync'.*maximum"):
        jobs.interval("sync", "Sync", days=999999999)(noop)


@pytest.mark.parametrize(("interval", "reason"), BAD_INTERVALS)
def test_schedule_job_refuses_a_bad_interval(
    manual_manager: LocalJobManager, interval: Any, reason: str
) -> None:
    with pytest.raises(InvalidScheduleError, match=f"job 'sync'.*{reason}"):
        manual_manager.schedule_job("sync", "Sync", noop, interval)
    assert manual_manager.get_job_status("sync") is None


def test_the_interval_bounds_themselves_are_accepted() -> None:
    assert parse_interval("a", MIN_INTERVAL) == MIN_INTERVAL
    assert parse_interval("a", MAX_INTERVAL) == MAX_INTERVAL
    assert parse_interval("a", timedelta(milliseconds=1)) == 0.001


def test_a_long_interval_at_the_maximum_schedules_and_shows_its_next_run(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    manual_manager.schedule_job("century", "Century", noop, MAX_INTERVAL)
    status = manual_manager.get_job_status("century")
    assert status is not None and status.next_run is not None
    assert status.next_run.year >= 2126


def test_an_error_message_never_carries_a_huge_repr() -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        parse_interval("sync", 10**400)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    "replace",
    [
        pytest.param(lambda m: m.schedule_job("keep", "v2", noop, 1e12), id="huge-interval"),
        pytest.param(lambda m: m.schedule_job("keep", "v2", noop, 1e-9), id="tiny-interval"),
        pytest.param(lambda m: m.schedule_job("keep", "v2", noop, 10**400), id="overflow"),
        pytest.param(
            lambda m: m.schedule_cron_job("keep", "v2", noop, "0 22-2 * * *"), id="bad-cron"
        ),
    ],
)
def test_a_failed_replacement_keeps_the_old_jobs_grid(
    manual_manager: LocalJobManager, clock: ManualClock, replace: Callable[[Any], None]
) -> None:
    manual_manager.schedule_job("keep", "Keep", noop, 10)
    before = manual_manager.get_job_status("keep")
    clock.advance(3)
    with pytest.raises(InvalidScheduleError, match="job 'keep'"):
        replace(manual_manager)
    after = manual_manager.get_job_status("keep")
    assert after is not None and before is not None
    assert (after.name, after.next_run) == ("Keep", before.next_run)


@pytest.mark.parametrize("jitter", [None, 2.0], ids=["plain", "jitter"])
@pytest.mark.parametrize("shared", [False, True], ids=["solo", "state-dir"])
def test_a_replacement_failing_while_starting_restores_the_old_due_time_exactly(
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    shared: bool,
    jitter: Optional[float],
) -> None:
    manual_manager = LocalJobManager(
        clock=clock,
        env={} if shared else {"BGJOBS_STATE_DIR": ""},
        max_workers=1,
        state_dir=tmp_path if shared else None,
    )
    assert (manual_manager.state_dir is not None) == shared
    try:
        _fail_a_replacement(manual_manager, clock, monkeypatch, jitter)
    finally:
        manual_manager.shutdown(timeout=5)


def _fail_a_replacement(
    manual_manager: LocalJobManager,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    jitter: Optional[float],
) -> None:
    manual_manager.schedule_job("keep", "Keep", noop, 10, jitter=jitter)
    before = manual_manager.get_job_status("keep")
    armed_before = {job.id: handle.due for job, handle in manual_manager._armed.items()}
    clock.advance(3)
    coordinator = manual_manager._coordinator
    real_start = coordinator.start

    def failing_start(job: Any) -> None:
        if job.name == "v2":
            raise OSError("lock file trouble")
        real_start(job)

    monkeypatch.setattr(coordinator, "start", failing_start)
    with pytest.raises(OSError):
        manual_manager.schedule_job("keep", "v2", noop, 10)
    after = manual_manager.get_job_status("keep")
    assert after is not None and before is not None
    assert (after.name, after.next_run) == ("Keep", before.next_run)
    armed_after = {job.id: handle.due for job, handle in manual_manager._armed.items()}
    assert armed_after == armed_before  # the same grid, not one re-anchored 3 s later
