"""Outcomes that used to pass in silence (issue 11, fault 9): a stop that gave up waiting,
a replacement that forgot the job's counters, a job that needs an argument, a reserved id."""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, List

import pytest

from bgjobs import (
    InvalidScheduleError,
    JobRegistry,
    LocalJobManager,
    NoOpJobManager,
    TriggerDevJobManager,
    VercelJobManager,
)
from bgjobs.config import get_trigger_dev_config

HOUR = 3600.0


def noop() -> None:
    pass


@pytest.fixture(autouse=True)
def _fail_on_thread_errors(thread_errors: List[BaseException]) -> None:
    """Every test here fails if a thread (a timer, a worker) dies with an exception."""


# --- stop_all_jobs says whether everything finished ----------------------------------------


def test_stop_all_jobs_with_a_hung_job_returns_false_and_names_it(
    manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    started, release = threading.Event(), threading.Event()

    def hung() -> None:
        started.set()
        release.wait(30)

    manager.schedule_job("hung", "Hung job", hung, HOUR)
    worker = threading.Thread(target=manager.trigger_job, args=("hung",), daemon=True)
    worker.start()
    assert started.wait(10)
    try:
        with caplog.at_level(logging.WARNING, logger="bgjobs"):
            assert manager.stop_all_jobs(wait=True, timeout=0.05) is False
        assert "job 'hung' (Hung job) is still running" in caplog.text
        assert manager.stop_all_jobs() is False  # without waiting: still running
    finally:
        release.set()
        worker.join(10)
    assert manager.stop_all_jobs(wait=True, timeout=10) is True
    assert manager.stop_all_jobs() is True


def test_stop_all_jobs_returns_true_when_nothing_runs(manager: LocalJobManager) -> None:
    manager.schedule_job("idle", "Idle", noop, HOUR)
    assert manager.stop_all_jobs(wait=True, timeout=1) is True
    assert manager.stop_all_jobs() is True


def test_stop_all_jobs_from_inside_a_job_does_not_count_its_own_run(
    manager: LocalJobManager,
) -> None:
    answers: List[bool] = []
    manager.schedule_job(
        "self-stop", "Self stop", lambda: answers.append(manager.stop_all_jobs(wait=True)), HOUR
    )
    assert manager.trigger_job("self-stop")
    assert answers == [True]


def test_every_manager_answers_stop_all_jobs_with_a_bool() -> None:
    assert NoOpJobManager().stop_all_jobs(wait=True, timeout=1) is True
    with VercelJobManager(env={}) as vercel:
        vercel.schedule_job("sync", "Sync", noop, 300)
        assert vercel.stop_all_jobs(wait=True, timeout=1) is True
    config = get_trigger_dev_config({"TRIGGER_DEV_API_KEY": "tr_dev_x"})
    with TriggerDevJobManager(config, env={}) as remote:
        assert remote.stop_all_jobs(wait=True, timeout=1) is True


# --- replacing a job keeps its counters: the id is the same job ------------------------------


def fail() -> None:
    raise ValueError("boom")


def test_replacing_a_job_keeps_its_counters_and_last_runs(manager: LocalJobManager) -> None:
    manager.schedule_job("sync", "Sync", noop, HOUR)
    assert manager.trigger_job("sync")
    manager.schedule_job("sync", "Sync", fail, HOUR)
    assert manager.trigger_job("sync")
    before = manager.get_job_status("sync")
    assert before is not None and before.last_success is not None

    manager.schedule_cron_job("sync", "Sync v2", noop, "0 9 * * *")
    status = manager.get_job_status("sync")
    assert status is not None
    assert (status.runs, status.failures) == (2, 1)
    assert status.status == "failed" and status.error == "ValueError: boom"
    assert status.last_run == before.last_run and status.last_success == before.last_success
    assert status.last_error == "ValueError: boom" and status.name == "Sync v2"


def test_a_run_going_while_its_job_is_replaced_shows_and_counts_on_the_new_one(
    manager: LocalJobManager,
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(30)

    manager.schedule_job("sync", "Sync", slow, HOUR)
    worker = threading.Thread(target=manager.trigger_job, args=("sync",), daemon=True)
    worker.start()
    assert started.wait(10)
    try:
        manager.schedule_job("sync", "Sync", noop, HOUR)
        status = manager.get_job_status("sync")
        assert status is not None and status.status == "running"
        assert manager.trigger_job("sync") is False  # still one job: no overlap
    finally:
        release.set()
        worker.join(10)
    status = manager.get_job_status("sync")
    assert status is not None
    assert (status.status, status.runs, status.skips) == ("completed", 1, 1)


# --- a job that needs an argument is refused when declared ---------------------------------


def needs_one(customer_id: int) -> None:
    pass


async def needs_one_async(customer_id: int) -> None:
    pass


class NeedsOne:
    def __call__(self, customer_id: int) -> None:
        pass


@pytest.mark.parametrize(
    "job",
    [needs_one, needs_one_async, NeedsOne(), functools.partial(needs_one), lambda *, k: None],
    ids=["function", "async", "callable-object", "partial-unbound", "keyword-only"],
)
def test_a_job_that_needs_an_argument_is_refused_naming_the_job(
    manager: LocalJobManager, job: Any
) -> None:
    with pytest.raises(InvalidScheduleError, match=r"job 'report'.*needs argument"):
        manager.schedule_job("report", "Report", job, HOUR)
    with pytest.raises(InvalidScheduleError, match=r"job 'report'.*needs argument"):
        manager.schedule_cron_job("report", "Report", job, "0 9 * * *")
    with pytest.raises(InvalidScheduleError, match=r"job 'report'.*needs argument"):
        JobRegistry().add_interval("report", "Report", job, HOUR)
    assert manager.get_job_status("report") is None


def test_the_argument_check_names_the_parameter(manager: LocalJobManager) -> None:
    with pytest.raises(InvalidScheduleError, match=r"needs_one\(\) needs argument.*customer_id"):
        manager.schedule_job("report", "Report", needs_one, HOUR)


async def takes_nothing_async() -> None:
    pass


@pytest.mark.parametrize(
    "job",
    [
        noop,
        takes_nothing_async,
        functools.partial(needs_one, 42),
        lambda customer_id=1: None,
        lambda *args, **kwargs: None,
        print,  # a builtin whose signature can be read: nothing required
        dict,  # a class: called with no arguments
        max,  # a builtin without a readable signature: cannot tell, so accepted
    ],
    ids=["function", "async", "bound-partial", "default", "varargs", "print", "class", "max"],
)
def test_jobs_callable_without_arguments_are_accepted(manager: LocalJobManager, job: Any) -> None:
    manager.schedule_job("ok", "OK", job, HOUR)
    assert manager.get_job_status("ok") is not None


# --- reserved ids are refused when declared, in every runtime -------------------------------


@pytest.mark.parametrize("reserved", ["status", "runs", "metrics"])
def test_reserved_ids_are_refused_by_the_local_runtime_and_the_cron_decorator(
    manager: LocalJobManager, reserved: str
) -> None:
    with pytest.raises(InvalidScheduleError, match=rf"job '{reserved}'.*reserved"):
        manager.schedule_job(reserved, "R", noop, HOUR)
    with pytest.raises(InvalidScheduleError, match=rf"job '{reserved}'.*reserved"):
        manager.schedule_cron_job(reserved, "R", noop, "0 9 * * *")
    with pytest.raises(InvalidScheduleError, match=rf"job '{reserved}'.*reserved"):
        JobRegistry().cron(reserved, "R", "0 9 * * *")(noop)
