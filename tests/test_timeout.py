"""``timeout=`` and ``current_run()``: a run past its limit is flagged ``timed_out`` and
asked to stop; its thread is never killed and it keeps its overlap lock until it ends."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, List, Optional

import pytest
from support_clock import ManualClock

import bgjobs
from bgjobs import InvalidScheduleError, LocalJobManager
from bgjobs.running import ActiveRun


@pytest.fixture(autouse=True)
def _fail_on_thread_errors(thread_errors: List[BaseException]) -> None:
    """Every test here fails if a thread dies with an exception."""


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


class Slow:
    """A job that reports its run and then waits (on ``cancelled`` if cooperative)."""

    def __init__(self, *, cooperative: bool = True) -> None:
        self.cooperative = cooperative
        self.started = threading.Event()
        self.release = threading.Event()
        self.run: Optional[ActiveRun] = None
        self.saw_cancel = False

    def __call__(self) -> None:
        self.run = bgjobs.current_run()
        self.started.set()
        assert self.run is not None
        if self.cooperative:
            self.saw_cancel = self.run.cancelled.wait(10)
        else:
            self.release.wait(10)


def trigger_in_thread(manager: LocalJobManager, job_id: str) -> threading.Thread:
    thread = threading.Thread(target=manager.trigger_job, args=(job_id,), daemon=True)
    thread.start()
    return thread


def test_a_run_past_its_timeout_is_flagged_everywhere_and_asked_to_stop(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgjobs")
    job = Slow()
    with LocalJobManager(clock=clock, env={}) as manager:
        manager.schedule_job("slow", "Slow", job, 3600, timeout=5)
        thread = trigger_in_thread(manager, "slow")
        assert job.started.wait(5)
        status = manager.get_job_status("slow")
        assert status is not None and status.status == "running" and not status.timed_out
        assert job.run is not None and not job.run.cancelled.is_set()
        clock.advance(4.5)
        time.sleep(0.05)  # a deadline thread that fired early would have set it by now
        assert not job.run.cancelled.is_set()
        clock.advance(0.5)
        thread.join(5)
        assert not thread.is_alive() and job.saw_cancel
        status = manager.get_job_status("slow")
        assert status is not None
        assert status.status == "failed" and status.timed_out
        assert status.error is not None and status.error.startswith("TimeoutError: ran 5.000s")
        [run] = manager.get_job_runs("slow")
        assert run.outcome == "timed_out" and run.run_id == job.run.run_id
        metrics = manager.get_job_metrics()
        assert (metrics.timed_out_executions, metrics.failed_jobs) == (1, 1)
        assert status.to_dict()["timed_out"] is True
        assert metrics.to_dict()["timed_out_executions"] == 1
    warned = [r for r in caplog.records if "passed its 5s timeout" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert getattr(warned[0], "job_id", None) == "slow"
    assert getattr(warned[0], "run_id", None) == job.run.run_id
    assert getattr(warned[0], "trigger", None) == "manual"
    assert any(r.levelno == logging.ERROR and "timed out" in r.getMessage() for r in caplog.records)


def test_a_timed_out_run_keeps_its_overlap_lock_until_it_really_ends(clock: ManualClock) -> None:
    job = Slow(cooperative=False)
    with LocalJobManager(clock=clock, env={}) as manager:
        manager.schedule_job("hung", "Hung", job, 3600, timeout=1)
        thread = trigger_in_thread(manager, "hung")
        assert job.started.wait(5)
        clock.advance(2)
        assert job.run is not None and job.run.cancelled.wait(5)
        status = manager.get_job_status("hung")
        assert status is not None and status.status == "running" and status.timed_out
        assert manager.trigger_job("hung") is False  # still running: never twice at once
        assert thread.is_alive()  # never killed
        job.release.set()
        thread.join(5)
        [run] = manager.get_job_runs("hung")
        assert run.outcome == "timed_out" and run.duration == 2.0


def test_a_run_within_its_timeout_is_not_flagged(clock: ManualClock) -> None:
    seen: List[Optional[ActiveRun]] = []
    with LocalJobManager(clock=clock, env={}) as manager:
        manager.schedule_job(
            "quick", "Quick", lambda: seen.append(bgjobs.current_run()), 60, timeout=5
        )
        assert manager.trigger_job("quick")
        status = manager.get_job_status("quick")
        assert status is not None and status.status == "completed" and not status.timed_out
        assert manager.get_job_runs("quick")[0].outcome == "completed"
        assert seen[0] is not None and not seen[0].cancelled.is_set()
        assert manager.get_job_metrics().timed_out_executions == 0


def test_a_job_that_fails_after_its_timeout_keeps_both_errors(clock: ManualClock) -> None:
    def job() -> None:
        run = bgjobs.current_run()
        assert run is not None
        run.cancelled.wait(10)
        raise RuntimeError("interrupted")

    with LocalJobManager(clock=clock, env={}) as manager:
        manager.schedule_job("j", "J", job, 60, timeout=1)
        thread = trigger_in_thread(manager, "j")
        assert wait_until(lambda: manager.running_job_ids() == ["j"])
        clock.advance(1)
        thread.join(5)
        [run] = manager.get_job_runs("j")
        assert run.outcome == "timed_out"
        assert run.error is not None and "RuntimeError: interrupted" in run.error
        assert run.traceback is not None and "RuntimeError" in run.traceback


def test_a_scheduled_run_times_out_on_real_time_too() -> None:
    job = Slow()
    with LocalJobManager(env={}) as manager:
        manager.schedule_job("slow", "Slow", job, 0.05, timeout=0.2)
        assert job.started.wait(5)
        assert job.run is not None and job.run.cancelled.wait(5)
        assert wait_until(lambda: bool(manager.get_job_runs("slow")[-1].outcome == "timed_out"))
        assert manager.get_job_runs("slow")[-1].trigger == "schedule"


def test_shutdown_sets_cancelled_so_a_cooperative_job_ends() -> None:
    job = Slow()
    manager = LocalJobManager(env={})
    manager.schedule_job("worker", "Worker", job, 3600)  # no timeout: shutdown alone
    thread = trigger_in_thread(manager, "worker")
    assert job.started.wait(5)
    started = time.monotonic()
    assert manager.shutdown(timeout=5) is True
    assert time.monotonic() - started < 4
    thread.join(5)
    assert job.saw_cancel
    assert manager.get_job_runs("worker")[0].outcome == "completed"


def test_current_run_describes_the_run_and_is_none_outside_one(manager: LocalJobManager) -> None:
    assert bgjobs.current_run() is None
    seen: List[Any] = []

    def job() -> None:
        seen.append(bgjobs.current_run())

    manager.schedule_job("job", "Job", job, 3600)
    manager.trigger_job("job")
    run = seen[0]
    assert isinstance(run, bgjobs.JobRun) and isinstance(run, ActiveRun)
    assert (run.job_id, run.trigger, run.attempt, run.outcome) == ("job", "manual", 1, "running")
    assert run.run_id == manager.get_job_runs("job")[0].run_id
    assert "cancelled" not in run.to_dict()
    assert bgjobs.current_run() is None


def test_current_run_is_seen_by_async_jobs_and_nested_runs(manager: LocalJobManager) -> None:
    seen: List[Any] = []

    async def async_job() -> None:
        await asyncio.sleep(0)
        seen.append(bgjobs.current_run())

    def outer() -> None:
        seen.append(bgjobs.current_run())
        manager.trigger_job("inner")
        seen.append(bgjobs.current_run())

    manager.schedule_job("inner", "Inner", async_job, 3600)
    manager.schedule_job("outer", "Outer", outer, 3600)
    manager.trigger_job("outer")
    assert [r.job_id for r in seen] == ["outer", "inner", "outer"]


def test_async_job_on_a_running_loop_sees_current_run(manager: LocalJobManager) -> None:
    seen: List[Any] = []

    async def job() -> None:
        seen.append(bgjobs.current_run())

    manager.schedule_job("job", "Job", job, 3600)

    async def main() -> None:
        manager.trigger_job("job")  # a loop runs here: the job gets a thread of its own

    asyncio.run(main())
    assert seen and seen[0] is not None and seen[0].job_id == "job"


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_bad_timeout_names_the_job_and_the_value(manager: LocalJobManager, bad: float) -> None:
    with pytest.raises(InvalidScheduleError, match=r"job 'j': timeout must be .* got"):
        manager.schedule_job("j", "J", lambda: None, 60, timeout=bad)
    with pytest.raises(TypeError, match="job 'j': timeout must be seconds"):
        manager.schedule_job("j", "J", lambda: None, 60, timeout="5")  # type: ignore[arg-type]


def test_jobs_without_policies_start_no_deadline_thread(manager: LocalJobManager) -> None:
    manager.schedule_job("plain", "Plain", lambda: None, 3600)
    manager.trigger_job("plain")
    assert manager._deadlines is None  # so no bgjobs-timeouts thread either


def test_a_run_that_outlasts_its_timeout_on_the_testing_clock_is_flagged() -> None:
    from bgjobs.testing import ManualClock as TestingClock
    from bgjobs.testing import ManualJobManager

    test_clock = TestingClock()
    seen: List[bool] = []

    def long_job() -> None:
        test_clock.advance(10)  # the run lasts 10 s of the test's clock
        run = bgjobs.current_run()
        assert run is not None
        seen.append(run.cancelled.wait(5))

    with ManualJobManager(test_clock) as manager:
        manager.schedule_job("long", "Long", long_job, 3600, timeout=5)
        test_clock.advance(3600)
        [run] = manager.get_job_runs("long")
        assert run.outcome == "timed_out" and run.duration == 10.0
        assert seen == [True]


def test_prometheus_metrics_show_timeouts(clock: ManualClock) -> None:
    from support_web import bearer, web_client

    job = Slow()
    with LocalJobManager(clock=clock, env={}) as manager:
        manager.schedule_job("slow", "Slow", job, 3600, timeout=1)
        thread = trigger_in_thread(manager, "slow")
        assert job.started.wait(5)
        clock.advance(1)
        thread.join(5)
        text = (
            web_client(manager, "secret-for-tests")
            .get("/api/cron/metrics", headers=bearer("secret-for-tests"))
            .get_data(as_text=True)
        )
    assert 'bgjobs_job_timed_out{job="slow"} 1' in text
    assert "bgjobs_timed_out_executions_total 1" in text
