"""``retries=``/``retry_backoff=``: a failed scheduled run is tried again after a doubling,
jittered backoff; each attempt is recorded; the schedule is undisturbed and a retry never
overlaps the next fire."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Callable, Iterator, List

import pytest
from support_clock import ManualClock

import bgjobs
from bgjobs import InvalidScheduleError, LocalJobManager
from bgjobs.policies import MAX_RETRY_DELAY, JobPolicy


@pytest.fixture(autouse=True)
def _fail_on_thread_errors(thread_errors: List[BaseException]) -> None:
    """Every test here fails if a thread dies with an exception."""


@pytest.fixture
def two_workers(clock: ManualClock) -> Iterator[LocalJobManager]:
    """Two workers: a fire due while a retry waits gets a worker and finds the job busy."""
    with LocalJobManager(clock=clock, env={}, max_workers=2) as m:
        yield m


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


class Flaky:
    """Fails its first ``failures`` calls; records each call's attempt number."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: List[int] = []
        self.lock = threading.Lock()

    def __call__(self) -> None:
        run = bgjobs.current_run()
        assert run is not None
        with self.lock:
            self.attempts.append(run.attempt)
            if len(self.attempts) <= self.failures:
                raise RuntimeError(f"attempt {run.attempt} failed")

    def calls(self) -> int:
        with self.lock:
            return len(self.attempts)


def retry_armed(manager: LocalJobManager) -> bool:
    """A failed attempt has armed its retry (a timer: no thread waits for it)."""
    return wait_until(lambda: len(manager._retries) == 1)


def test_a_failed_scheduled_run_is_retried_with_doubling_backoff(
    clock: ManualClock, two_workers: LocalJobManager
) -> None:
    job = Flaky(failures=2)
    two_workers.schedule_job("flaky", "Flaky", job, 60, retries=3, retry_backoff=2)
    next_run = two_workers.get_job_status("flaky").next_run  # type: ignore[union-attr]
    clock.advance(60)
    assert wait_until(lambda: job.calls() == 1) and retry_armed(two_workers)
    clock.advance(0.9)  # the first retry waits 1..2 s: never less than half the backoff
    time.sleep(0.05)
    assert job.calls() == 1
    clock.advance(1.1)
    assert wait_until(lambda: job.calls() == 2) and retry_armed(two_workers)
    clock.advance(4)  # the second waits 2..4 s
    assert wait_until(lambda: job.calls() == 3)
    assert wait_until(lambda: len(two_workers.get_job_runs("flaky")) == 3)
    assert wait_until(lambda: two_workers.get_job_runs("flaky")[0].outcome == "completed")
    runs = two_workers.get_job_runs("flaky")[::-1]
    assert [(r.attempt, r.outcome) for r in runs] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert {r.scheduled_for for r in runs} == {next_run}
    assert {r.trigger for r in runs} == {"schedule"}
    assert len({r.run_id for r in runs}) == 3
    assert job.attempts == [1, 2, 3]
    status = two_workers.get_job_status("flaky")
    assert status is not None and status.status == "completed"
    # The schedule is undisturbed: the next fire is still on the 60 s grid.
    assert next_run is not None and status.next_run == next_run + timedelta(seconds=60)
    assert two_workers.get_job_metrics().total_executions == 3


def test_retries_stop_after_the_last_attempt(
    clock: ManualClock, two_workers: LocalJobManager
) -> None:
    job = Flaky(failures=99)
    two_workers.schedule_job("bad", "Bad", job, 600, retries=1, retry_backoff=1)
    clock.advance(600)
    assert wait_until(lambda: job.calls() == 1) and retry_armed(two_workers)
    clock.advance(1)
    assert wait_until(lambda: len(two_workers.get_job_runs("bad")) == 2)
    assert wait_until(lambda: two_workers.get_job_runs("bad")[0].outcome == "failed")
    clock.advance(300)  # nothing more until the next fire
    time.sleep(0.05)
    assert job.calls() == 2
    assert [r.attempt for r in two_workers.get_job_runs("bad")] == [2, 1]


def test_a_retry_never_overlaps_the_next_fire(
    clock: ManualClock, two_workers: LocalJobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    monkeypatch.setattr(random, "random", lambda: 0.999)  # the retry waits ~16 s, not 8..16
    job = Flaky(failures=1)
    two_workers.schedule_job("j", "J", job, 10, retries=1, retry_backoff=16)
    clock.advance(10)
    assert wait_until(lambda: job.calls() == 1) and retry_armed(two_workers)
    clock.advance(10)  # the fire due at 20 comes while the retry waits: skipped, counted
    assert wait_until(lambda: two_workers.get_job_metrics().skipped_executions == 1)
    assert job.calls() == 1
    clock.advance(6)  # 16 s after the failure: the retry has run
    assert wait_until(lambda: job.calls() == 2)
    assert job.attempts == [1, 2]
    status = two_workers.get_job_status("j")
    assert status is not None and status.skips == 1


def test_manual_triggers_are_not_retried(manager: LocalJobManager) -> None:
    job = Flaky(failures=99)
    manager.schedule_job("j", "J", job, 3600, retries=3, retry_backoff=0)
    assert manager.trigger_job("j") is True
    assert job.calls() == 1
    assert [r.attempt for r in manager.get_job_runs("j")] == [1]


def test_stopping_a_job_cancels_its_pending_retry(
    clock: ManualClock, two_workers: LocalJobManager
) -> None:
    job = Flaky(failures=99)
    two_workers.schedule_job("j", "J", job, 60, retries=5, retry_backoff=30)
    clock.advance(60)
    assert wait_until(lambda: job.calls() == 1) and retry_armed(two_workers)
    job_lock = two_workers._job("j").run_lock  # type: ignore[union-attr]
    assert job_lock.locked()  # held through the backoff
    two_workers.stop_job("j")
    assert not job_lock.locked() and not two_workers._retries  # released at once
    assert two_workers.trigger_job("j") is True  # not busy any more
    clock.advance(60)
    time.sleep(0.05)
    assert job.calls() == 2  # the trigger above; no retry


def test_a_job_waiting_for_its_retry_is_busy_and_holds_no_thread(
    clock: ManualClock, two_workers: LocalJobManager
) -> None:
    job = Flaky(failures=1)
    two_workers.schedule_job("j", "J", job, 60, retries=1, retry_backoff=30)
    clock.advance(60)
    assert wait_until(lambda: job.calls() == 1) and retry_armed(two_workers)
    assert two_workers.wait_idle(5)  # nothing runs while it waits
    assert two_workers.trigger_job("j") is False  # yet the job is busy: no overlap
    assert job.calls() == 1


def test_retries_run_in_step_with_the_testing_clock() -> None:
    from bgjobs.testing import ManualClock as TestingClock
    from bgjobs.testing import ManualJobManager

    test_clock = TestingClock()
    job = Flaky(failures=2)
    with ManualJobManager(test_clock) as manager:
        manager.schedule_job("j", "J", job, 3600, retries=2, retry_backoff=10)
        test_clock.advance(3600)
        assert job.attempts == [1]
        test_clock.advance(10)  # the first retry waits 5..10 s
        assert job.attempts == [1, 2]
        test_clock.advance(20)
        assert job.attempts == [1, 2, 3]
        assert [r.outcome for r in manager.get_job_runs("j")] == ["completed", "failed", "failed"]


def test_retry_delays_double_up_to_a_cap_with_jitter_below_them() -> None:
    policy = JobPolicy(retries=20, retry_backoff=1.5)
    for attempt, full in ((1, 1.5), (2, 3.0), (3, 6.0), (4, 12.0)):
        delays = [policy.retry_delay(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert policy.retry_delay(30) <= MAX_RETRY_DELAY


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_retries_name_the_job(manager: LocalJobManager, bad: object) -> None:
    with pytest.raises(InvalidScheduleError, match=r"job 'j': retries must be a whole number"):
        manager.schedule_job("j", "J", lambda: None, 60, retries=bad)  # type: ignore[arg-type]


def test_a_negative_backoff_names_the_job(manager: LocalJobManager) -> None:
    with pytest.raises(InvalidScheduleError, match=r"job 'j': retry_backoff must be"):
        manager.schedule_job("j", "J", lambda: None, 60, retries=1, retry_backoff=-1)


def test_a_paused_jobs_pending_retry_does_not_run(
    clock: ManualClock, two_workers: LocalJobManager
) -> None:
    job = Flaky(failures=99)
    two_workers.schedule_job("j", "J", job, 600, retries=3, retry_backoff=10)
    clock.advance(600)
    assert wait_until(lambda: job.calls() == 1) and retry_armed(two_workers)
    two_workers.pause_job("j")
    clock.advance(10)
    assert wait_until(lambda: not two_workers._retries)
    assert two_workers.wait_idle(5)
    assert job.calls() == 1
    assert not two_workers._job("j").run_lock.locked()  # type: ignore[union-attr]
