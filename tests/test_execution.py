"""The execution core through LocalJobManager: validation, trigger_job, statuses, metrics.

Jobs here are scheduled with long intervals (an hour) so that no timer fires during a
test: every run is started explicitly with ``trigger_job``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from typing import Any, List

import pytest
from support_clock import ManualClock

from bgjobs import (
    BGJobsError,
    InvalidScheduleError,
    JobNotFoundError,
    LocalJobManager,
    NoOpJobManager,
)
from bgjobs.execution import BaseJobManager, Job

HOUR = 3600.0


def noop() -> None:
    pass


@pytest.fixture(autouse=True)
def _fail_on_thread_errors(thread_errors: List[BaseException]) -> None:
    """Every test here fails if a thread (a timer, a worker) dies with an exception."""


# --- bad input fails fast and registers nothing -----------------------------------------------


def assert_not_registered(manager: LocalJobManager, job_id: str) -> None:
    assert manager.get_job_status(job_id) is None
    assert job_id not in [s.id for s in manager.get_all_job_statuses()]


@pytest.mark.parametrize("bad_id", ["", "   "], ids=["empty", "blank"])
def test_empty_job_id_is_a_value_error(manager: LocalJobManager, bad_id: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        manager.schedule_job(bad_id, "Name", noop, 10)
    with pytest.raises(ValueError, match="non-empty"):
        manager.schedule_cron_job(bad_id, "Name", noop, "0 9 * * *")
    assert manager.get_all_job_statuses() == []


@pytest.mark.parametrize("bad_job", [None, 42, "print('hi')"], ids=["none", "int", "str"])
def test_non_callable_job_is_a_type_error_naming_the_job(
    manager: LocalJobManager, bad_job: Any
) -> None:
    with pytest.raises(TypeError, match="'report'") as excinfo:
        manager.schedule_job("report", "Report", bad_job, 10)
    assert repr(bad_job) in str(excinfo.value)
    with pytest.raises(TypeError, match="'report'"):
        manager.schedule_cron_job("report", "Report", bad_job, "0 9 * * *")
    assert_not_registered(manager, "report")


@pytest.mark.parametrize(
    "interval",
    [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "5", None, [5]],
    ids=[
        "zero",
        "zero-float",
        "negative",
        "negative-float",
        "nan",
        "inf",
        "minus-inf",
        "bool-true",
        "bool-false",
        "string",
        "none",
        "list",
    ],
)
def test_bad_interval_is_an_invalid_schedule_error_naming_job_and_value(
    manager: LocalJobManager, interval: Any
) -> None:
    with pytest.raises(InvalidScheduleError) as excinfo:
        manager.schedule_job("sync", "Sync", noop, interval)
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, BGJobsError)
    message = str(excinfo.value)
    assert "'sync'" in message
    assert repr(interval) in message
    assert_not_registered(manager, "sync")


@pytest.mark.parametrize(
    ("expression", "hint"),
    [
        ("* * *", "3 fields"),
        ("* * * * * * *", "7 fields"),
        ("61 * * * *", "invalid"),
        ("0 25 * * *", "invalid"),
        ("0 9 * * funday", "invalid"),
        ("@often", "unknown cron alias"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("", "non-empty"),
    ],
    ids=[
        "three-fields",
        "seven-fields",
        "minute-61",
        "hour-25",
        "bad-weekday",
        "unknown-alias",
        "february-30",
        "april-31",
        "empty",
    ],
)
def test_bad_cron_is_an_invalid_schedule_error_naming_job_and_expression(
    manager: LocalJobManager, expression: str, hint: str
) -> None:
    with pytest.raises(InvalidScheduleError) as excinfo:
        manager.schedule_cron_job("nightly", "Nightly", noop, expression)
    message = str(excinfo.value)
    assert "'nightly'" in message
    assert repr(expression) in message
    assert hint in message
    assert_not_registered(manager, "nightly")


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "Europe/Pariss", "../etc/passwd", 5])
def test_unknown_timezone_is_an_invalid_schedule_error(manager: LocalJobManager, tz: Any) -> None:
    with pytest.raises(InvalidScheduleError) as excinfo:
        manager.schedule_cron_job("nightly", "Nightly", noop, "0 2 * * *", timezone=tz)
    assert "'nightly'" in str(excinfo.value)
    assert repr(tz) in str(excinfo.value)
    assert_not_registered(manager, "nightly")


def test_unknown_bgjobs_timezone_default_is_an_invalid_schedule_error() -> None:
    m = LocalJobManager(env={"BGJOBS_TIMEZONE": "Nowhere/Special"})
    with pytest.raises(InvalidScheduleError, match="Nowhere/Special"):
        m.schedule_cron_job("nightly", "Nightly", noop, "0 2 * * *")
    assert m.get_all_job_statuses() == []


def test_replacing_a_job_with_bad_input_keeps_the_old_job(manager: LocalJobManager) -> None:
    manager.schedule_job("keep", "Keep", noop, HOUR)
    before = manager.get_job_status("keep")
    with pytest.raises(InvalidScheduleError):
        manager.schedule_job("keep", "Keep v2", noop, 0)
    with pytest.raises(InvalidScheduleError):
        manager.schedule_cron_job("keep", "Keep v2", noop, "not a cron")
    with pytest.raises(InvalidScheduleError):
        manager.schedule_cron_job("keep", "Keep v2", noop, "0 2 * * *", timezone="Nope/Nope")
    with pytest.raises(TypeError):
        manager.schedule_job("keep", "Keep v2", "noop", HOUR)  # type: ignore[arg-type]
    assert manager.get_job_status("keep") == before
    assert [s.id for s in manager.get_all_job_statuses()] == ["keep"]


def test_noop_manager_accepts_even_bad_input_silently() -> None:
    m = NoOpJobManager()
    m.schedule_job("", "x", None, -1)  # type: ignore[arg-type]
    m.schedule_cron_job("x", "x", noop, "garbage", timezone="Nope/Nope")
    assert m.trigger_job("x") is False
    m.stop_job("x")
    m.stop_all_jobs(wait=True, timeout=0)
    assert m.get_job_status("x") is None
    assert m.get_all_job_statuses() == []
    metrics = m.get_job_metrics()
    assert (metrics.total_executions, metrics.successful_jobs, metrics.failed_jobs) == (0, 0, 0)
    assert metrics.average_job_duration == 0.0 and metrics.skipped_executions == 0


# --- trigger_job ------------------------------------------------------------------------------


def test_trigger_job_runs_in_the_calling_thread_and_returns_true(
    manager: LocalJobManager,
) -> None:
    threads: List[threading.Thread] = []
    manager.schedule_job("now", "Now", lambda: threads.append(threading.current_thread()), HOUR)
    assert manager.trigger_job("now") is True
    assert threads == [threading.current_thread()]
    status = manager.get_job_status("now")
    assert status is not None
    assert status.status == "completed"
    assert status.runs == 1 and status.failures == 0 and status.error is None
    assert status.last_run is not None and status.last_run.utcoffset() is not None
    assert status.next_run is not None  # triggering does not disturb the schedule
    metrics = manager.get_job_metrics()
    assert (metrics.total_executions, metrics.successful_jobs, metrics.failed_jobs) == (1, 1, 0)


def test_failing_job_is_recorded_and_logged_not_raised(
    manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise ValueError("boom")

    manager.schedule_job("fragile", "Fragile", boom, HOUR)
    with caplog.at_level(logging.ERROR, logger="bgjobs"):
        assert manager.trigger_job("fragile") is True
    status = manager.get_job_status("fragile")
    assert status is not None
    assert status.status == "failed"
    assert status.error == "ValueError: boom"
    assert status.runs == 1 and status.failures == 1
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(records) == 1
    assert "fragile" in records[0].getMessage()
    assert records[0].exc_info is not None and records[0].exc_info[0] is ValueError
    assert records[0].name.startswith("bgjobs")
    metrics = manager.get_job_metrics()
    assert (metrics.total_executions, metrics.successful_jobs, metrics.failed_jobs) == (1, 0, 1)


def test_error_is_cleared_when_a_failed_job_succeeds_again(manager: LocalJobManager) -> None:
    outcomes = iter([ValueError("boom"), None])

    def flaky() -> None:
        exc = next(outcomes)
        if exc is not None:
            raise exc

    manager.schedule_job("flaky", "Flaky", flaky, HOUR)
    manager.trigger_job("flaky")
    assert manager.get_job_status("flaky").error == "ValueError: boom"  # type: ignore[union-attr]
    manager.trigger_job("flaky")
    status = manager.get_job_status("flaky")
    assert status is not None
    assert (status.status, status.error, status.runs, status.failures) == ("completed", None, 2, 1)


def test_trigger_job_returns_false_while_the_job_runs_in_another_thread(
    manager: LocalJobManager,
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        assert release.wait(10)

    manager.schedule_job("slow", "Slow", slow, HOUR)
    results: List[bool] = []
    worker = threading.Thread(target=lambda: results.append(manager.trigger_job("slow")))
    worker.start()
    try:
        assert started.wait(5)
        assert manager.get_job_status("slow").status == "running"  # type: ignore[union-attr]
        assert manager.trigger_job("slow") is False
        assert manager.get_job_status("slow").skips == 1  # type: ignore[union-attr]
        assert manager.get_job_metrics().skipped_executions == 1
    finally:
        release.set()
        worker.join(5)
    assert results == [True]
    status = manager.get_job_status("slow")
    assert status is not None and status.runs == 1 and status.status == "completed"
    assert manager.get_job_metrics().total_executions == 1


def test_trigger_unknown_job_raises_job_not_found_naming_it(manager: LocalJobManager) -> None:
    with pytest.raises(JobNotFoundError) as excinfo:
        manager.trigger_job("ghost-job")
    assert isinstance(excinfo.value, KeyError)
    assert isinstance(excinfo.value, BGJobsError)
    assert "ghost-job" in str(excinfo.value)
    with pytest.raises(KeyError):
        manager.trigger_job("ghost-job")


def test_trigger_job_works_on_a_stopped_job(manager: LocalJobManager) -> None:
    calls: List[int] = []
    manager.schedule_job("paused", "Paused", lambda: calls.append(1), HOUR)
    manager.stop_job("paused")
    assert manager.trigger_job("paused") is True
    assert calls == [1]
    status = manager.get_job_status("paused")
    assert status is not None
    assert status.status == "stopped" and status.next_run is None and status.runs == 1


def test_job_can_trigger_another_job_from_inside_its_run(manager: LocalJobManager) -> None:
    inner: List[bool] = []
    manager.schedule_job("child", "Child", noop, HOUR)
    manager.schedule_job(
        "parent", "Parent", lambda: inner.append(manager.trigger_job("child")), HOUR
    )
    assert manager.trigger_job("parent") is True
    assert inner == [True]
    statuses = {s.id: (s.status, s.runs) for s in manager.get_all_job_statuses()}
    assert statuses == {"child": ("completed", 1), "parent": ("completed", 1)}
    assert manager.running_job_ids() == []
    assert manager.get_job_metrics().total_executions == 2


def test_stop_all_waits_for_an_outer_run_after_its_nested_trigger_ended(
    manager: LocalJobManager,
) -> None:
    nested_done, release, finished = threading.Event(), threading.Event(), threading.Event()

    def parent() -> None:
        manager.trigger_job("child")
        nested_done.set()
        assert release.wait(10)
        finished.set()

    manager.schedule_job("child", "Child", noop, HOUR)
    manager.schedule_job("parent", "Parent", parent, HOUR)
    worker = threading.Thread(target=manager.trigger_job, args=("parent",))
    worker.start()
    try:
        assert nested_done.wait(5)
        assert manager.running_job_ids() == ["parent"]
        threading.Timer(0.1, release.set).start()
        manager.stop_all_jobs(wait=True, timeout=5)
        assert finished.is_set()
    finally:
        release.set()
        worker.join(5)


def test_job_triggering_itself_is_skipped_not_deadlocked(manager: LocalJobManager) -> None:
    inner: List[bool] = []
    manager.schedule_job("self", "Self", lambda: inner.append(manager.trigger_job("self")), HOUR)
    assert manager.trigger_job("self") is True
    assert inner == [False]
    assert manager.get_job_status("self").skips == 1  # type: ignore[union-attr]


# --- async jobs -------------------------------------------------------------------------------


def test_async_job_runs_to_completion(manager: LocalJobManager) -> None:
    steps: List[str] = []

    async def fetch() -> None:
        steps.append("start")
        await asyncio.sleep(0.01)
        steps.append("end")

    manager.schedule_job("async", "Async", fetch, HOUR)
    assert manager.trigger_job("async") is True
    assert steps == ["start", "end"]
    assert manager.get_job_status("async").status == "completed"  # type: ignore[union-attr]


def test_failing_async_job_is_recorded(manager: LocalJobManager) -> None:
    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    manager.schedule_job("async-boom", "Async boom", boom, HOUR)
    assert manager.trigger_job("async-boom") is True
    status = manager.get_job_status("async-boom")
    assert status is not None and status.status == "failed" and status.error == "ValueError: boom"


def test_async_job_triggered_from_inside_a_running_event_loop(manager: LocalJobManager) -> None:
    steps: List[str] = []

    async def job() -> None:
        await asyncio.sleep(0.01)
        steps.append("done")

    manager.schedule_job("async", "Async", job, HOUR)

    async def caller() -> bool:
        return manager.trigger_job("async")

    assert asyncio.run(caller()) is True
    assert steps == ["done"]


def test_callable_object_and_lambda_jobs_are_accepted(manager: LocalJobManager) -> None:
    calls: List[str] = []

    class Job:
        def __call__(self) -> None:
            calls.append("object")

    manager.schedule_job("obj", "Object", Job(), HOUR)
    manager.schedule_cron_job("lam", "Lambda", lambda: calls.append("lambda"), "@daily")
    manager.trigger_job("obj")
    manager.trigger_job("lam")
    assert calls == ["object", "lambda"]


# --- statuses and metrics on an injected clock -------------------------------------------------


def test_status_times_and_durations_come_from_the_injected_clock() -> None:
    clock = ManualClock()
    m = LocalJobManager(clock=clock, env={})
    try:
        durations = iter([2.0, 4.0, 6.0])

        def work() -> None:
            clock.advance(next(durations))

        start = clock.time()
        m.schedule_job("work", "Work", work, HOUR)
        status = m.get_job_status("work")
        assert status is not None
        assert status.next_run is not None and status.next_run.timestamp() == start + HOUR
        for _ in range(3):
            m.trigger_job("work")
        status = m.get_job_status("work")
        assert status is not None
        assert status.duration == 6.0  # the last run
        assert status.last_run is not None
        assert status.last_run.timestamp() == start + 2.0 + 4.0  # when the last run started
        metrics = m.get_job_metrics()
        assert metrics.total_executions == 3
        assert metrics.average_job_duration == pytest.approx(4.0)
    finally:
        m.stop_all_jobs()


def test_metrics_average_counts_failed_runs_too() -> None:
    clock = ManualClock()
    m = LocalJobManager(clock=clock, env={})
    try:

        def fails() -> None:
            clock.advance(1.0)
            raise RuntimeError("nope")

        m.schedule_job("ok", "OK", lambda: clock.advance(3.0), HOUR)
        m.schedule_job("bad", "Bad", fails, HOUR)
        m.trigger_job("ok")
        m.trigger_job("bad")
        metrics = m.get_job_metrics()
        assert (metrics.total_executions, metrics.successful_jobs, metrics.failed_jobs) == (2, 1, 1)
        assert metrics.average_job_duration == pytest.approx(2.0)
        assert metrics.last_cleanup.utcoffset() is not None
    finally:
        m.stop_all_jobs()


def test_statuses_are_frozen_snapshots(manager: LocalJobManager) -> None:
    manager.schedule_job("a", "A", noop, HOUR)
    snapshot = manager.get_job_status("a")
    assert snapshot is not None
    manager.trigger_job("a")
    assert snapshot.runs == 0 and snapshot.status == "scheduled"
    with pytest.raises(AttributeError):
        snapshot.status = "running"  # type: ignore[misc]


def test_all_statuses_are_in_scheduling_order_and_replacement_keeps_position(
    manager: LocalJobManager,
) -> None:
    for job_id in ("c", "a", "b"):
        manager.schedule_job(job_id, job_id.upper(), noop, HOUR)
    manager.schedule_cron_job("a", "A again", noop, "@daily")
    statuses = manager.get_all_job_statuses()
    assert [s.id for s in statuses] == ["c", "a", "b"]
    assert statuses[1].name == "A again" and statuses[1].schedule.startswith("cron")


def test_stop_unknown_job_is_a_no_op_and_stop_is_idempotent(manager: LocalJobManager) -> None:
    manager.stop_job("never-scheduled")
    manager.schedule_job("a", "A", noop, HOUR)
    manager.stop_job("a")
    manager.stop_job("a")
    status = manager.get_job_status("a")
    assert status is not None and status.status == "stopped" and status.next_run is None
    assert manager.get_job_status("never-scheduled") is None


def test_rescheduling_a_stopped_job_starts_it_again(manager: LocalJobManager) -> None:
    manager.schedule_job("a", "A", noop, HOUR)
    manager.stop_job("a")
    manager.schedule_job("a", "A", noop, HOUR)
    status = manager.get_job_status("a")
    assert status is not None and status.status == "scheduled" and status.next_run is not None


def test_status_and_metrics_serialise_to_json_ready_dicts(manager: LocalJobManager) -> None:
    import json

    manager.schedule_job("a", "A", noop, HOUR)
    manager.trigger_job("a")
    status = manager.get_job_status("a")
    assert status is not None
    data = json.loads(json.dumps(status.to_dict()))
    assert data["id"] == "a" and data["status"] == "completed" and data["runs"] == 1
    assert data["last_run"].endswith("+00:00")
    metrics = json.loads(json.dumps(manager.get_job_metrics().to_dict()))
    assert metrics["total_executions"] == 1


def test_two_jobs_waiting_for_each_other_in_stop_all_jobs_do_not_deadlock() -> None:
    manager = BaseJobManager()
    both_inside = threading.Barrier(2, timeout=10)
    returned: list = []

    def stopper(name: str):
        def job() -> None:
            both_inside.wait()
            manager.stop_all_jobs(wait=True)  # no timeout: must not wait for the other job
            returned.append(name)

        return job

    manager.schedule_job("a", "A", stopper("a"), 3600)
    manager.schedule_job("b", "B", stopper("b"), 3600)
    threads = [threading.Thread(target=manager.trigger_job, args=(i,)) for i in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(returned) == ["a", "b"]
    assert not any(t.is_alive() for t in threads)


def test_a_replacement_that_fails_to_start_leaves_the_old_job_running() -> None:
    class FlakyStart(BaseJobManager):
        fail = False

        def _start(self, job: Job) -> None:
            if self.fail:
                raise OSError("cannot arm")
            job.set_next_run(None)

    manager = FlakyStart()
    manager.schedule_job("sync", "Sync", lambda: None, 60)
    manager.fail = True
    with pytest.raises(OSError):
        manager.schedule_job("sync", "Sync v2", lambda: None, 30)
    manager.fail = False
    status = manager.get_job_status("sync")
    assert status is not None
    assert status.name == "Sync" and status.status == "scheduled"
    assert [s.id for s in manager.get_all_job_statuses()] == ["sync"]
