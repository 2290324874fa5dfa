"""freezegun's frozen, ticking and moved time is the time bgjobs schedules and shows by,
in every thread, and never makes the timer thread hang or spin."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator, List

import pytest
from freezegun import freeze_time

from bgjobs import _time
from bgjobs._local.timers import FROZEN_RECHECK
from bgjobs.local import LocalJobManager

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def before() -> Iterator[LocalJobManager]:
    """A manager made before any frozen block."""
    m = LocalJobManager(env={})
    yield m
    m.shutdown(timeout=5)


def schedule_four(manager: LocalJobManager) -> None:
    manager.schedule_job("iv", "Interval", lambda: None, 60)
    manager.schedule_cron_job("utc", "UTC", lambda: None, "0 9 * * *")
    manager.schedule_cron_job("paris", "Paris", lambda: None, "0 9 * * *", timezone="Europe/Paris")
    manager.schedule_job("iv-paris", "Interval", lambda: None, timedelta(hours=2))


FROZEN_NEXT_RUNS = {
    "iv": utc(2024, 1, 15, 8, 31),
    "utc": utc(2024, 1, 15, 9),
    "paris": utc(2024, 1, 16, 8),  # 09:00 CET; 09:00 in Paris on the 15th has passed
    "iv-paris": utc(2024, 1, 15, 10, 30),
}


def next_runs(manager: LocalJobManager) -> dict:  # type: ignore[type-arg]
    return {s.id: s.next_run for s in manager.get_all_job_statuses()}


def test_frozen_next_runs_for_a_manager_made_before_the_block(before: LocalJobManager) -> None:
    with freeze_time("2024-01-15 08:30:00"):
        schedule_four(before)
        assert next_runs(before) == FROZEN_NEXT_RUNS
        time.sleep(0.3)  # the timer thread had its look: nothing was due, nothing ran
        assert next_runs(before) == FROZEN_NEXT_RUNS
        assert before.get_job_metrics().total_executions == 0


def test_frozen_next_runs_for_a_manager_made_inside_the_block() -> None:
    with freeze_time("2024-01-15 08:30:00"), LocalJobManager(env={}) as manager:
        schedule_four(manager)
        assert next_runs(manager) == FROZEN_NEXT_RUNS
        assert manager.get_job_metrics().last_cleanup == utc(2024, 1, 15, 8, 30)


def test_frozen_time_does_not_spin_the_timer_thread(before: LocalJobManager) -> None:
    # Before the fix the timer thread read the real time (freezegun answers real time near
    # a threading frame), found every frozen-2024 cron overdue and ran them in a loop.
    with freeze_time("2024-01-15 08:30:00"):
        for n in range(5):
            before.schedule_cron_job(f"c{n}", "C", lambda: None, f"{n} 9 * * *")
        cpu = time.process_time()
        time.sleep(0.5)
        used = time.process_time() - cpu
    assert before.get_job_metrics().total_executions == 0
    assert used < 0.25, f"{used:.2f}s of CPU in 0.5s: the timer thread spins"


def test_an_interval_job_keeps_running_through_and_after_a_frozen_block(
    before: LocalJobManager,
) -> None:
    # freezegun freezes time.monotonic too; bgjobs' waits count on the real one, so the
    # job neither bursts on entering (monotonic jumping to 2024's epoch) nor hangs after.
    runs: List[datetime] = []
    frozen_run, real_run = threading.Event(), threading.Event()

    def job() -> None:
        now = _time.utc_now()
        runs.append(now)
        (frozen_run if now.year == 2024 else real_run).set()

    before.schedule_job("tick", "Tick", job, 0.05)
    assert real_run.wait(5)
    with freeze_time("2024-01-15 08:30:00"):
        assert frozen_run.wait(5)
        started = [run.started for run in before.get_job_runs("tick", limit=100)]
        assert utc(2024, 1, 15, 8, 30) in started
    real_run.clear()
    assert real_run.wait(5)
    assert runs[-1].year >= 2026
    assert before.get_job_status("tick").skips < 5  # type: ignore[union-attr]


def test_runs_statuses_and_metrics_carry_frozen_timestamps() -> None:
    with freeze_time("2024-01-15 08:30:00"), LocalJobManager(env={}) as manager:
        manager.schedule_cron_job("r", "R", lambda: None, "0 9 * * *")
        assert manager.trigger_job("r")
        (run,) = manager.get_job_runs("r")
        assert run.started == run.finished == utc(2024, 1, 15, 8, 30)
        status = manager.get_job_status("r")
        assert status is not None
        assert status.last_run == status.last_success == utc(2024, 1, 15, 8, 30)
        assert manager.get_job_metrics().last_cleanup == utc(2024, 1, 15, 8, 30)


def test_a_ticking_block_moves_next_runs_as_jobs_fire() -> None:
    fired: List[datetime] = []
    done = threading.Event()

    def job() -> None:
        fired.append(_time.utc_now())
        if len(fired) >= 2:
            done.set()

    ticked = threading.Event()
    with freeze_time("2024-01-15 08:29:58", tick=True), LocalJobManager(env={}) as manager:
        manager.schedule_cron_job("s", "S", job, "* * * * * *")  # every second
        manager.schedule_job("i", "I", ticked.set, 0.25)
        first = manager.get_job_status("s").next_run  # type: ignore[union-attr]
        interval_first = manager.get_job_status("i").next_run  # type: ignore[union-attr]
        assert first is not None and first.year == 2024
        assert interval_first is not None and interval_first.year == 2024
        assert done.wait(10) and ticked.wait(10)
        assert manager.wait_idle(5)
        later = manager.get_job_status("s").next_run  # type: ignore[union-attr]
        interval_later = manager.get_job_status("i").next_run  # type: ignore[union-attr]
        (run,) = manager.get_job_runs("i", limit=1)
    assert later is not None and later > first
    assert interval_later is not None and interval_later > interval_first
    assert interval_later.year == run.started.year == 2024
    assert all(when.year == 2024 for when in fired)


def test_move_to_past_a_due_time_runs_the_job_within_the_frozen_recheck() -> None:
    ran = threading.Event()
    with freeze_time("2024-01-15 08:30:00") as frozen, LocalJobManager(env={}) as manager:
        manager.schedule_cron_job("r", "R", ran.set, "0 9 * * *")
        frozen.move_to("2024-01-15 09:00:01")
        started = time.monotonic()
        assert ran.wait(5 * FROZEN_RECHECK)
        assert time.monotonic() - started < 5 * FROZEN_RECHECK
        assert manager.wait_idle(5)
        status = manager.get_job_status("r")
        assert status is not None
        assert status.last_run == utc(2024, 1, 15, 9, 0, 1)
        assert status.next_run == utc(2024, 1, 16, 9)


@pytest.mark.parametrize(
    ("frozen", "expected"),
    [
        # spring forward: 02:30 does not exist on 29 March; it fires at the change, 01:00Z
        ("2026-03-28T23:00:00Z", utc(2026, 3, 29, 1, 0)),
        # fall back: 02:30 happens twice on 25 October; it fires at the first, 00:30Z
        ("2026-10-24T23:00:00Z", utc(2026, 10, 25, 0, 30)),
    ],
)
def test_paris_cron_next_runs_on_both_dst_change_days_under_frozen_time(
    frozen: str, expected: datetime
) -> None:
    with freeze_time(frozen), LocalJobManager(env={}) as manager:
        manager.schedule_cron_job("n", "Night", lambda: None, "30 2 * * *", timezone="Europe/Paris")
        assert manager.get_job_status("n").next_run == expected  # type: ignore[union-attr]


def test_a_test_that_ignores_bgjobs_leaves_it_on_real_time() -> None:
    with freeze_time("2024-01-15 08:30:00", ignore=["bgjobs"]):
        assert _time.utc_now().year >= 2026
    with freeze_time("2024-01-15 08:30:00"):
        assert _time.utc_now() == utc(2024, 1, 15, 8, 30)
        assert _time.freezegun_active()
    assert not _time.freezegun_active()


def test_monotonic_stays_real_under_frozen_time() -> None:
    with freeze_time("2024-01-15 08:30:00"):
        first = _time.monotonic()
        time.sleep(0.02)
        assert _time.monotonic() > first
        # bgjobs imported inside a block would find freezegun's fake: it takes the real one
        assert _time._unpatched_monotonic()() < 1e9
