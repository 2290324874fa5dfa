"""TriggerDevJobManager and sync_registry against the HTTP fake of Trigger.dev.

No mocking of requests: every test talks HTTP to ``FakeTriggerDev`` on 127.0.0.1, with a
client that gives up fast (2 attempts, 10 ms backoff, 0.3 s read timeout).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
import warnings
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, List, Optional

import pytest
from fake_triggerdev import FakeTriggerDev
from openapi import OpenAPI
from support_triggerdev import (
    SECRET,
    TASK,
    assert_requests_match_spec,
    fast_client,
    make_manager,
    trigger_env,
    wait_until,
)

from bgjobs.errors import InvalidScheduleError, JobNotFoundError, TriggerDevError
from bgjobs.factory import create_job_manager
from bgjobs.registry import JobRegistry
from bgjobs.triggerdev import SyncReport, TriggerDevJobManager, sync_registry
from bgjobs.triggerdev_client import TriggerDevClient
from bgjobs.types import TriggerDevConfig

KEY = "bgjobs:production:repository-sync"
KEY_PATH = "/api/v1/schedules/bgjobs%3Aproduction%3Arepository-sync"


def noop() -> None:
    pass


def idle(manager: TriggerDevJobManager) -> bool:
    """No registration thread is running (a peek at the manager's worker)."""
    worker = manager._worker
    return worker is None or not worker.is_alive()


@pytest.fixture
def fake() -> Iterator[FakeTriggerDev]:
    with FakeTriggerDev(api_key=SECRET) as server:
        yield server


@pytest.fixture
def managers(fake: FakeTriggerDev) -> Iterator[Callable[..., TriggerDevJobManager]]:
    """Managers for ``fake``; closed, and their worker joined, after the test."""
    made: List[TriggerDevJobManager] = []

    def make(**kwargs: Any) -> TriggerDevJobManager:
        manager = make_manager(fake, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        worker = manager._worker
        manager.close()
        if worker is not None:
            worker.join(timeout=5)


@pytest.fixture
def manager(managers: Callable[..., TriggerDevJobManager]) -> TriggerDevJobManager:
    return managers()


def remote_cron(fake: FakeTriggerDev, key: str) -> Optional[str]:
    schedule = fake.schedule(key)
    return None if schedule is None else str(schedule["generator"]["expression"])


# -- registration: what is sent, and when ----------------------------------------------


def test_a_new_job_is_created_with_key_external_id_and_a_spec_valid_body(
    manager: TriggerDevJobManager, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    manager.schedule_job("repository-sync", "Repository Sync", noop, timedelta(minutes=5))

    assert manager.sync(timeout=5) == {"repository-sync": "created"}

    get, post = fake.requests
    assert (get.method, get.path) == ("GET", KEY_PATH)
    assert (post.method, post.path) == ("POST", "/api/v1/schedules")
    assert post.json == {
        "task": TASK,
        "cron": "*/5 * * * *",
        "deduplicationKey": KEY,
        "externalId": "repository-sync",
        "timezone": "UTC",
    }
    assert_requests_match_spec(spec, fake.requests)
    (schedule,) = fake.schedules
    assert schedule["deduplicationKey"] == KEY and schedule["externalId"] == "repository-sync"
    status = manager.get_job_status("repository-sync")
    assert status is not None
    assert status.status == "scheduled" and status.last_sync_error is None
    assert status.next_run == datetime.fromisoformat(schedule["nextRun"].replace("Z", "+00:00"))
    assert status.next_run > datetime.now(timezone.utc)


def test_schedule_calls_return_at_once_while_the_server_hangs(
    managers: Callable[..., TriggerDevJobManager], fake: FakeTriggerDev
) -> None:
    # The first registration's GET and its retry hang until cut. A call that waited for
    # the network would wait at least the 5 s read timeout: ten times the bound below.
    fake.hang_next(60.0, count=2)
    manager = managers(client=fast_client(fake, read_timeout=5.0))

    started = time.perf_counter()
    manager.schedule_job("a", "A", noop, 300)
    manager.schedule_cron_job("b", "B", noop, "0 9 * * *")
    manager.schedule_job("a", "A", noop, 600)  # rescheduling is just as quick
    assert time.perf_counter() - started < 0.5
    wait_until(lambda: [r.fault for r in fake.requests] == ["hang"])  # in flight, hanging

    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="still running"):
        manager.sync(timeout=0.2)
    assert 0.15 < time.perf_counter() - started < 2.0  # the timeout, not the read timeout

    # The server drops both hanging attempts: that registration fails, and the worker
    # goes on with the queue, which holds the latest schedule of "a".
    fake.cut_hangs()
    assert manager.sync(timeout=5) == {"a": "created", "b": "created"}
    assert remote_cron(fake, "bgjobs:production:a") == "*/10 * * * *"
    assert [r.fault for r in fake.requests[:2]] == ["hang", "hang"]


def test_registering_an_unchanged_schedule_writes_nothing(
    managers: Callable[..., TriggerDevJobManager], fake: FakeTriggerDev
) -> None:
    fake.add_schedule(TASK, "*/5 * * * *", deduplication_key=KEY, external_id="repository-sync")
    fake.add_schedule(
        TASK,
        "0 9 * * *",
        deduplication_key="bgjobs:production:renewal",
        external_id="renewal",
        timezone="Europe/Paris",
    )
    manager = managers()
    manager.schedule_job("repository-sync", "Repository Sync", noop, 300)
    manager.schedule_cron_job("renewal", "Renewal", noop, "0 9 * * *", timezone="Europe/Paris")

    assert manager.sync(timeout=5) == {"repository-sync": "unchanged", "renewal": "unchanged"}
    assert fake.writes() == []
    assert {r.method for r in fake.requests} == {"GET"}

    # A restarted process (a new manager) registering the same jobs writes nothing either.
    fake.clear_requests()
    again = managers()
    again.schedule_job("repository-sync", "Repository Sync", noop, timedelta(minutes=5))
    assert again.sync(timeout=5) == {"repository-sync": "unchanged"}
    assert fake.writes() == []


def test_a_changed_cron_is_updated_in_place_by_key_and_stays_deactivated(
    manager: TriggerDevJobManager, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    before = fake.add_schedule(
        TASK, "0 * * * *", deduplication_key=KEY, external_id="repository-sync", active=False
    )
    manager.schedule_job("repository-sync", "Repository Sync", noop, 300)

    assert manager.sync(timeout=5) == {"repository-sync": "updated"}

    (write,) = fake.writes()
    assert (write.method, write.path) == ("PUT", KEY_PATH)
    assert write.json == {
        "task": TASK,
        "cron": "*/5 * * * *",
        "externalId": "repository-sync",
        "timezone": "UTC",
    }
    assert_requests_match_spec(spec, fake.requests)
    (after,) = fake.schedules
    assert after["id"] == before["id"]
    assert after["generator"]["expression"] == "*/5 * * * *"
    assert after["active"] is False  # deactivation is the operator's decision
    status = manager.get_job_status("repository-sync")
    assert status is not None and status.next_run is None  # inactive: no nextRun


def test_a_deactivated_schedule_stays_deactivated_across_a_restart(
    managers: Callable[..., TriggerDevJobManager], fake: FakeTriggerDev
) -> None:
    first = managers()
    first.schedule_job("repository-sync", "Repository Sync", noop, 300)
    first.sync(timeout=5)
    assert first.deactivate_remote("repository-sync") is True

    restarted = managers()
    restarted.schedule_job("repository-sync", "Repository Sync", noop, 3600)
    assert restarted.sync(timeout=5) == {"repository-sync": "updated"}
    schedule = fake.schedule(KEY)
    assert schedule is not None
    assert schedule["active"] is False and schedule["generator"]["expression"] == "0 * * * *"


def test_a_job_rescheduled_while_its_registration_is_in_flight_ends_with_the_latest_cron(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    fake.hang_next(0.15, method="POST")
    manager.schedule_job("job", "Job", noop, 300)
    wait_until(lambda: any(r.method == "POST" for r in fake.requests))

    manager.schedule_job("job", "Job", noop, 600)  # while the POST for */5 is in flight

    assert manager.sync(timeout=5) == {"job": "updated"}
    (schedule,) = fake.schedules
    assert schedule["generator"]["expression"] == "*/10 * * * *"


def test_a_job_rescheduled_before_its_turn_is_registered_once(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    fake.hang_next(0.1, method="GET")  # keep the worker busy with the first job
    manager.schedule_job("first", "First", noop, 300)
    wait_until(lambda: fake.requests)
    for minutes in (2, 3, 4, 5, 6):
        manager.schedule_job("second", "Second", noop, minutes * 60)

    assert manager.sync(timeout=5) == {"first": "created", "second": "created"}
    second_writes = [r for r in fake.writes() if (r.json or {}).get("externalId") == "second"]
    assert [r.json["cron"] for r in second_writes] == ["*/6 * * * *"]


def test_a_schedule_deleted_between_lookup_and_update_is_recreated_without_a_stray(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    fake.add_schedule(TASK, "0 * * * *", deduplication_key=KEY, external_id="repository-sync")
    fake.hang_next(0.15, method="PUT")
    manager.schedule_job("repository-sync", "Repository Sync", noop, 300)
    wait_until(lambda: any(r.method == "PUT" for r in fake.requests))
    with fast_client(fake) as admin:  # someone deletes it while our PUT is on its way
        assert admin.delete_schedule(KEY) is True

    assert manager.sync(timeout=5) == {"repository-sync": "created"}

    (schedule,) = fake.schedules  # the PUT's keyless stray was removed
    assert schedule["deduplicationKey"] == KEY
    assert schedule["generator"]["expression"] == "*/5 * * * *"
    assert schedule["externalId"] == "repository-sync"


# -- conversions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "cron"),
    [
        (60, "* * * * *"),
        (300, "*/5 * * * *"),
        (timedelta(minutes=5), "*/5 * * * *"),
        (3600, "0 * * * *"),
        (timedelta(hours=6), "0 */6 * * *"),
        (86400, "0 0 * * *"),
    ],
)
def test_intervals_convert_to_an_exact_cron(
    manager: TriggerDevJobManager, fake: FakeTriggerDev, interval: Any, cron: str
) -> None:
    manager.schedule_job("job", "Job", noop, interval)
    manager.sync(timeout=5)
    assert remote_cron(fake, "bgjobs:production:job") == cron


@pytest.mark.parametrize(
    ("expression", "cron"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("0 */5 * * * *", "*/5 * * * *"),
        ("0  9 * *  1-5", "0 9 * * 1-5"),
    ],
)
def test_cron_expressions_convert_to_five_fields(
    manager: TriggerDevJobManager, fake: FakeTriggerDev, expression: str, cron: str
) -> None:
    manager.schedule_cron_job("job", "Job", noop, expression)
    manager.sync(timeout=5)
    assert remote_cron(fake, "bgjobs:production:job") == cron


@pytest.mark.parametrize(
    "schedule",
    [
        {"interval": 7 * 60},
        {"interval": 90},
        {"interval": 0.5},
        {"cron": "30 * * * * *"},
        {"cron": "*/30 * * * * *"},
        {"cron": "0 9 * * *", "timezone": timezone(timedelta(hours=2))},
    ],
    ids=["7min", "90s", "half-second", "seconds-30", "every-30s", "fixed-offset"],
)
def test_what_trigger_dev_cannot_run_fails_at_schedule_time_and_registers_nothing(
    manager: TriggerDevJobManager, fake: FakeTriggerDev, schedule: Any
) -> None:
    with pytest.raises(InvalidScheduleError, match="'job'"):
        if "interval" in schedule:
            manager.schedule_job("job", "Job", noop, schedule["interval"])
        else:
            manager.schedule_cron_job(
                "job", "Job", noop, schedule["cron"], timezone=schedule.get("timezone")
            )
    assert manager.get_job_status("job") is None
    assert manager.sync(timeout=5) == {}
    assert fake.requests == []


def test_an_invalid_reschedule_keeps_the_registered_schedule(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    manager.schedule_job("job", "Job", noop, 300)
    manager.sync(timeout=5)
    with pytest.raises(InvalidScheduleError, match="7m"):
        manager.schedule_job("job", "Job", noop, 420)
    status = manager.get_job_status("job")
    assert status is not None and status.status == "scheduled" and status.schedule == "every 5m"
    assert manager.sync(timeout=5) == {"job": "created"}
    assert remote_cron(fake, "bgjobs:production:job") == "*/5 * * * *"


def test_timezones_are_sent_by_iana_name_and_default_to_bgjobs_timezone(
    managers: Callable[..., TriggerDevJobManager], fake: FakeTriggerDev
) -> None:
    manager = managers(env={"BGJOBS_TIMEZONE": "America/New_York"})
    manager.schedule_cron_job("paris", "Paris", noop, "0 9 * * *", timezone="Europe/Paris")
    manager.schedule_cron_job("default", "Default", noop, "0 9 * * *")
    manager.schedule_job("interval", "Interval", noop, 3600)  # intervals are UTC
    manager.sync(timeout=5)
    zones = {s["externalId"]: s["timezone"] for s in fake.schedules}
    assert zones == {"paris": "Europe/Paris", "default": "America/New_York", "interval": "UTC"}


def test_the_key_holds_the_environment_so_environments_do_not_share_schedules(
    managers: Callable[..., TriggerDevJobManager], fake: FakeTriggerDev
) -> None:
    staging_key = "tr_stg_St4g1ngK3y0123456789"
    fake.add_environment(staging_key)
    production = managers()
    staging = managers(api_key=staging_key)
    assert production.dedup_key("job") == "bgjobs:production:job"
    assert staging.dedup_key("job") == "bgjobs:staging:job"
    for manager in (production, staging):
        manager.schedule_job("job", "Job", noop, 300)
        assert manager.sync(timeout=5) == {"job": "created"}
    keys = sorted(s["deduplicationKey"] for s in fake.schedules)
    assert keys == ["bgjobs:production:job", "bgjobs:staging:job"]


def test_task_id_comes_from_the_argument_then_the_environment(fake: FakeTriggerDev) -> None:
    config = TriggerDevConfig(enabled=True, api_key=SECRET, api_url=fake.url)
    assert TriggerDevJobManager(config, env={}).task_id == "bgjobs-dispatch"
    from_env = TriggerDevJobManager(config, env={"TRIGGER_DEV_TASK_ID": "my-dispatch"})
    assert from_env.task_id == "my-dispatch"
    assert TriggerDevJobManager(config, task_id="explicit", env={}).task_id == "explicit"


# -- failures and retries ----------------------------------------------------------------


def test_a_failed_registration_is_reported_by_sync_and_retried_by_the_next_sync(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    fake.fail_next(503, count=1000)
    manager.schedule_job("job", "Job", noop, 300)

    with pytest.raises(TriggerDevError, match="'job'") as info:
        manager.sync(timeout=5)
    assert info.value.status == 503
    status = manager.get_job_status("job")
    assert status is not None and status.last_sync_error is not None
    assert "503" in status.last_sync_error

    fake.clear_faults()
    assert manager.sync(timeout=5) == {"job": "created"}
    status = manager.get_job_status("job")
    assert status is not None and status.last_sync_error is None and status.next_run is not None


def test_at_the_plan_limit_existing_schedules_update_and_new_ones_fail_clearly(
    spec: OpenAPI,
) -> None:
    with FakeTriggerDev(api_key=SECRET, schedule_limit=1) as fake:
        before = fake.add_schedule(
            TASK, "0 * * * *", deduplication_key="bgjobs:production:a", external_id="a"
        )
        manager = make_manager(fake)
        try:
            manager.schedule_job("a", "A", noop, 300)
            manager.schedule_job("b", "B", noop, 600)

            with pytest.raises(TriggerDevError) as info:
                manager.sync(timeout=5)
            message = str(info.value)
            assert "'b'" in message and "'a'" not in message and "limit" in message
            # Named as the plan's schedule limit, with what counts and what to do.
            assert "plan's schedule limit (1/1 schedules" in message
            assert "Free plan allows 10 per project" in message and "--prune" in message
            assert info.value.status == 422
            after = fake.schedule("bgjobs:production:a")
            assert after is not None and after["id"] == before["id"]
            assert after["generator"]["expression"] == "*/5 * * * *"
            a, b = manager.get_job_status("a"), manager.get_job_status("b")
            assert a is not None and a.last_sync_error is None
            assert b is not None and b.last_sync_error is not None
            assert "422" in b.last_sync_error and "limit" in b.last_sync_error
            # The existing schedule was updated by key, never re-POSTed.
            posted = [r.json["deduplicationKey"] for r in fake.writes() if r.method == "POST"]
            assert set(posted) == {"bgjobs:production:b"}

            fake.schedule_limit = None  # the plan was upgraded
            assert manager.sync(timeout=5) == {"a": "updated", "b": "created"}
            b = manager.get_job_status("b")
            assert b is not None and b.last_sync_error is None
            assert_requests_match_spec(spec, fake.requests)
        finally:
            manager.close()


def test_a_post_refused_at_the_limit_for_a_key_that_appeared_meanwhile_becomes_a_put() -> None:
    with FakeTriggerDev(api_key=SECRET, schedule_limit=1) as fake:
        fake.add_schedule(
            TASK, "0 * * * *", deduplication_key="bgjobs:production:a", external_id="a"
        )
        # Our lookup misses it (another process was creating it at that moment).
        fake.fail_next(404, method="GET", path="/api/v1/schedules/bgjobs%3Aproduction%3Aa")
        manager = make_manager(fake)
        try:
            manager.schedule_job("a", "A", noop, 300)
            assert manager.sync(timeout=5) == {"a": "updated"}
            assert [r.method for r in fake.requests] == ["GET", "POST", "GET", "PUT"]
            assert len(fake.schedules) == 1
        finally:
            manager.close()


def test_an_unexpected_exception_is_recorded_and_the_worker_keeps_going(
    fake: FakeTriggerDev, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broken = {"on": True}

    class BuggyClient(TriggerDevClient):
        def retrieve_schedule(self, schedule_id_or_key: str) -> Any:
            if broken["on"] and schedule_id_or_key.endswith(":a"):
                raise RuntimeError(f"boom near {SECRET}")
            return super().retrieve_schedule(schedule_id_or_key)

    # The config has no key: the one the client was handed must be scrubbed all the same.
    config = TriggerDevConfig(enabled=True, api_url=fake.url, environment="production")
    manager = TriggerDevJobManager(config, client=BuggyClient(SECRET, fake.url), env={})
    try:
        manager.schedule_job("a", "A", noop, 300)
        manager.schedule_job("b", "B", noop, 300)  # queued behind the failing one

        with pytest.raises(TriggerDevError, match="'a'") as info:
            manager.sync(timeout=5)
        assert "RuntimeError: boom near ***" in str(info.value)
        assert fake.schedule("bgjobs:production:b") is not None
        status = manager.get_job_status("a")
        assert status is not None and "RuntimeError" in (status.last_sync_error or "")
        assert any("Traceback" in r.getMessage() for r in caplog.records)

        broken["on"] = False
        assert manager.sync(timeout=5) == {"a": "created", "b": "created"}
        assert SECRET not in caplog.text and SECRET not in (status.last_sync_error or "")
    finally:
        manager.close()


# -- threads and lifecycle ---------------------------------------------------------------


def test_concurrent_rescheduling_leaves_one_schedule_per_job_with_the_latest_cron(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    fake.hang_next(0.02, count=10)  # slow some requests so registrations overlap
    crons = ["*/5 * * * *", "*/10 * * * *", "0 * * * *", "15 3 * * *", "*/2 * * * *"]
    start = threading.Barrier(10)
    errors: List[BaseException] = []

    def reschedule(thread: int) -> None:
        try:
            start.wait()
            for i in range(20):
                job_id = f"job-{(thread + i) % 5}"
                if i % 4 == 3:
                    manager.schedule_job(job_id, job_id, noop, 60 * (1 + i % 3))
                else:
                    manager.schedule_cron_job(job_id, job_id, noop, crons[(thread * 7 + i) % 5])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reschedule, args=(t,)) for t in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    outcomes = manager.sync(timeout=10)

    job_ids = [f"job-{i}" for i in range(5)]
    assert sorted(outcomes) == job_ids
    assert sorted(s["deduplicationKey"] for s in fake.schedules) == [
        manager.dedup_key(job_id) for job_id in job_ids
    ]
    expected = manager._remote_specs()
    for job_id in job_ids:
        assert remote_cron(fake, manager.dedup_key(job_id)) == expected[job_id][0]


def test_stopping_jobs_makes_no_http_calls_and_keeps_remote_schedules(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    manager.schedule_job("a", "A", noop, 300)
    manager.schedule_job("b", "B", noop, 600)
    manager.sync(timeout=5)
    fake.clear_requests()

    manager.stop_job("a")
    manager.stop_job("unknown")
    manager.stop_all_jobs(wait=True, timeout=1)

    assert fake.requests == []
    for status in manager.get_all_job_statuses():
        assert status.status == "stopped" and status.next_run is None
    assert len(fake.schedules) == 2
    assert fake.requests == []


def test_stopping_while_the_worker_runs_puts_off_the_rest_until_sync(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    fake.hang_next(0.15, method="GET")
    for job_id in ("a", "b", "c"):
        manager.schedule_job(job_id, job_id, noop, 300)
    wait_until(lambda: fake.requests)

    manager.stop_all_jobs()
    wait_until(lambda: idle(manager))

    registered = {s["externalId"] for s in fake.schedules}
    assert registered == {"a"}  # only the one in flight; nothing was sent for b and c
    assert {r.segments[-1] for r in fake.requests if r.method == "GET"} == {"bgjobs:production:a"}

    # An explicit sync registers every job on the manager, stopped or not.
    assert manager.sync(timeout=5) == {"a": "created", "b": "created", "c": "created"}
    for status in manager.get_all_job_statuses():
        assert status.status == "stopped" and status.next_run is None


def test_a_dropped_manager_is_collected_and_its_worker_ends(fake: FakeTriggerDev) -> None:
    client = fast_client(fake)
    fake.hang_next(0.1, method="GET")
    manager: Optional[TriggerDevJobManager] = make_manager(fake, client=client)
    assert manager is not None
    for i in range(3):
        manager.schedule_job(f"job-{i}", "Job", noop, 300)
    wait_until(lambda: fake.requests)
    worker = manager._worker
    assert worker is not None
    ref = weakref.ref(manager)
    manager = None  # dropped while its registration is in flight

    worker.join(timeout=5)
    assert not worker.is_alive()
    gc.collect()
    assert ref() is None
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_registers_what_the_parent_had_in_flight(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    fake.hang_next(0.3, method="GET")
    manager.schedule_job("job", "Job", noop, 300)
    wait_until(lambda: fake.requests)  # the parent's worker is now mid-request

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # the child: its lock and queue must work without the parent's thread
        code = 1
        try:
            code = 0 if manager.sync(timeout=3) == {"job": "created"} else 2
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    assert manager.sync(timeout=5)["job"] in ("created", "unchanged")
    (schedule,) = fake.schedules
    assert schedule["deduplicationKey"] == "bgjobs:production:job"


# -- running jobs in-process ----------------------------------------------------------------


def test_trigger_job_and_dispatch_run_through_the_execution_core_without_http(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    calls: List[str] = []
    release = threading.Event()
    entered = threading.Event()

    def slow() -> None:
        entered.set()
        release.wait(5)

    def failing() -> None:
        raise ValueError("broken")

    manager.schedule_job("count", "Count", lambda: calls.append("ran"), 300)
    manager.schedule_job("slow", "Slow", slow, 300)
    manager.schedule_job("failing", "Failing", failing, 300)
    manager.sync(timeout=5)
    fake.clear_requests()

    assert manager.trigger_job("count") is True
    assert manager.trigger_job("failing") is True
    result = manager.dispatch("count")
    outcome, status = result.outcome, result.status
    assert outcome == "ran" and status is not None and status.status == "completed"
    assert calls == ["ran", "ran"]
    failed = manager.get_job_status("failing")
    assert failed is not None and failed.status == "failed" and failed.error == "ValueError: broken"

    runner = threading.Thread(target=manager.trigger_job, args=("slow",))
    runner.start()
    assert entered.wait(5)
    assert manager.trigger_job("slow") is False  # the overlap lock
    assert manager.dispatch("slow").outcome == "busy"
    release.set()
    runner.join(5)

    manager.stop_job("count")
    assert manager.dispatch("count").outcome == "stopped"
    assert manager.trigger_job("count") is True  # trigger_job still runs a stopped job
    assert manager.dispatch("missing").outcome == "not_found"
    with pytest.raises(JobNotFoundError, match="missing"):
        manager.trigger_job("missing")

    metrics = manager.get_job_metrics()
    assert metrics.total_executions == 5 and metrics.failed_jobs == 1
    assert metrics.skipped_executions == 2
    assert fake.requests == []


def test_next_run_moves_on_by_the_remote_cron_once_it_has_passed(
    manager: TriggerDevJobManager,
) -> None:
    manager.schedule_cron_job("job", "Job", noop, "0 9 * * *")
    manager.sync(timeout=5)
    status = manager.get_job_status("job")
    assert status is not None and status.next_run is not None
    first = status.next_run

    class Later:
        """The clock two days on (a peek at the injected clock of the execution core)."""

        def time(self) -> float:
            return first.timestamp() + 2 * 86400 + 60

        def monotonic(self) -> float:
            return time.monotonic()

    manager._clock = Later()
    later = manager.get_job_status("job")
    assert later is not None
    assert later.next_run == first + timedelta(days=3)
    assert manager.get_all_job_statuses()[0].next_run == first + timedelta(days=3)


# -- remote operations -------------------------------------------------------------------


def test_deactivate_and_delete_remote_report_whether_a_schedule_changed(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    manager.schedule_job("job", "Job", noop, 300)
    manager.sync(timeout=5)

    assert manager.deactivate_remote("job") is True
    schedule = fake.schedule("bgjobs:production:job")
    assert schedule is not None and schedule["active"] is False
    status = manager.get_job_status("job")
    assert status is not None and status.next_run is None
    assert manager.deactivate_remote("never-registered") is False

    assert manager.delete_remote("job") is True
    assert fake.schedules == []
    assert manager.delete_remote("job") is False
    assert manager.delete_remote("never-registered") is False

    # Still on the manager: the next sync puts its schedule back.
    assert manager.sync(timeout=5) == {"job": "created"}
    assert len(fake.schedules) == 1


def test_prune_removes_only_stale_schedules_of_its_own_environment(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    cron = "0 0 * * *"
    fake.add_schedule(TASK, cron, deduplication_key="bgjobs:production:stale", external_id="x")
    fake.add_schedule(TASK, cron, deduplication_key="bgjobs:staging:other-env")
    fake.add_schedule("other-task", cron, deduplication_key="someone-else")
    fake.add_schedule(TASK, cron)  # no deduplication key at all
    for i in range(12):  # more than one page
        fake.add_schedule(TASK, cron, deduplication_key=f"bgjobs:production:old-{i}")
    manager.schedule_job("keep", "Keep", noop, 300)
    manager.schedule_job("stopped", "Stopped", noop, 300)
    manager.sync(timeout=5)
    manager.stop_job("stopped")  # still on the manager

    removed = manager.prune()

    assert sorted(removed) == sorted(["stale", *(f"old-{i}" for i in range(12))])
    keys = sorted(str(s.get("deduplicationKey")) for s in fake.schedules)
    assert "bgjobs:staging:other-env" in keys and "someone-else" in keys
    assert "bgjobs:production:keep" in keys and "bgjobs:production:stopped" in keys
    assert len(fake.schedules) == 5
    assert manager.prune() == []
    assert sorted(s["deduplicationKey"] for s in manager.remote_schedules()) == [
        "bgjobs:production:keep",
        "bgjobs:production:stopped",
    ]


def test_trigger_remote_sends_the_external_id_with_one_idempotency_key_for_its_retries(
    manager: TriggerDevJobManager, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    manager.schedule_job("job", "Job", noop, 300)
    manager.sync(timeout=5)
    fake.clear_requests()
    trigger_path = f"/api/v1/tasks/{TASK}/trigger"
    fake.drop_next(method="POST", path=trigger_path)  # the first attempt's fate is unknown

    run_id = manager.trigger_remote("job")

    first, second = fake.requests
    key = first.header("Idempotency-Key")
    assert key and second.header("Idempotency-Key") == key
    assert first.json == second.json
    body = first.json
    assert body["options"] == {"idempotencyKey": key}
    payload = body["payload"]
    # A scheduled fire's shape (ScheduledTaskPayload), times as ISO strings: the task reads
    # `timestamp` (a bare {"externalId"} made it throw on `undefined.toISOString()`).
    assert payload == {
        "scheduleId": "bgjobs:production:job",
        "type": "IMPERATIVE",
        "timestamp": payload["timestamp"],
        "externalId": "job",
        "timezone": "UTC",
        "upcoming": [],
    }
    sent = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
    assert payload["timestamp"].endswith("Z")
    assert abs((datetime.now(timezone.utc) - sent).total_seconds()) < 60
    assert_requests_match_spec(spec, fake.requests)
    (run,) = fake.runs
    assert run["id"] == run_id and run["payload"] == payload

    assert manager.trigger_remote("job", idempotency_key="deploy-1") == manager.trigger_remote(
        "job", idempotency_key="deploy-1"
    )
    assert manager.trigger_remote("job") != manager.trigger_remote("job")

    fake.clear_requests()
    with pytest.raises(JobNotFoundError, match="missing"):
        manager.trigger_remote("missing")
    assert fake.requests == []


def test_every_request_the_manager_makes_matches_the_openapi_file(
    manager: TriggerDevJobManager, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    fake.add_schedule(TASK, "0 * * * *", deduplication_key="bgjobs:production:changed")
    fake.add_schedule(TASK, "0 * * * *", deduplication_key="bgjobs:production:stale")
    manager.schedule_job("new", "New", noop, 300)
    manager.schedule_cron_job("changed", "Changed", noop, "0 9 * * *", timezone="Asia/Tokyo")
    manager.sync(timeout=5)
    manager.deactivate_remote("new")
    manager.trigger_remote("new")
    manager.prune()
    manager.remote_schedules()
    manager.delete_remote("changed")

    methods = {(r.method, r.path.split("/")[3]) for r in fake.requests}
    assert {m for m, _ in methods} == {"GET", "POST", "PUT", "DELETE"}
    assert_requests_match_spec(spec, fake.requests)


# -- secrets ------------------------------------------------------------------------------


def test_the_api_key_never_appears_in_logs_reprs_or_errors(
    fake: FakeTriggerDev, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 and the client included
    config = TriggerDevConfig(enabled=True, api_key=SECRET, api_url=fake.url)
    manager = TriggerDevJobManager(config, env={}, read_timeout=0.3)
    texts: List[str] = [repr(manager), repr(manager.config), repr(manager.client), str(config)]
    try:
        fake.fail_next(400, body={"error": f"bad key {SECRET}"}, count=1000)
        manager.schedule_job("job", "Job", noop, 300)
        with pytest.raises(TriggerDevError) as info:
            manager.sync(timeout=5)
        texts += [str(info.value), repr(info.value), info.value.message]
        status = manager.get_job_status("job")
        assert status is not None and status.last_sync_error is not None
        texts.append(status.last_sync_error)
        with pytest.raises(TriggerDevError) as info:
            manager.deactivate_remote("job")
        texts.append(str(info.value))
        fake.clear_faults()
        manager.sync(timeout=5)
        texts.append(repr(manager))
    finally:
        manager.close()

    assert any("bad key ***" in text for text in texts)
    for text in [*texts, caplog.text]:
        assert SECRET not in text


def test_a_manager_without_an_api_key_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="TRIGGER_DEV_API_KEY"):
        TriggerDevJobManager(TriggerDevConfig(enabled=True), env={})


@pytest.mark.parametrize(("value", "attempts"), [(None, 5), ("2", 2), (" 7 ", 7)])
def test_attempts_per_call_come_from_trigger_dev_max_attempts(
    fake: FakeTriggerDev, value: Optional[str], attempts: int
) -> None:
    config = TriggerDevConfig(enabled=True, api_key=fake.api_key, api_url=fake.url)
    env = {} if value is None else {"TRIGGER_DEV_MAX_ATTEMPTS": value}
    manager = TriggerDevJobManager(config, env=env)
    try:
        assert manager.client._max_attempts == attempts
    finally:
        manager.close()


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_trigger_dev_max_attempts_is_a_clear_error(value: str) -> None:
    config = TriggerDevConfig(enabled=True, api_key="tr_dev_x", api_url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match=f"TRIGGER_DEV_MAX_ATTEMPTS .*{value!r}"):
        TriggerDevJobManager(config, env={"TRIGGER_DEV_MAX_ATTEMPTS": value})


# -- factory and the deploy step ------------------------------------------------------------


def test_the_factory_builds_a_manager_wired_to_the_configured_server(
    fake: FakeTriggerDev,
) -> None:
    manager = create_job_manager(trigger_env(fake))
    assert isinstance(manager, TriggerDevJobManager)
    try:
        assert manager.client.api_url == fake.url
        assert manager.dedup_key("job") == "bgjobs:production:job"
        manager.schedule_job("job", "Job", noop, 300)
        assert manager.sync(timeout=5) == {"job": "created"}
        assert {r.header("Authorization") for r in fake.requests} == {f"Bearer {SECRET}"}
    finally:
        manager.close()


def test_sync_registry_registers_prunes_and_reports(fake: FakeTriggerDev) -> None:
    registry = JobRegistry()
    registry.add_interval("repository-sync", "Repository Synchronization", noop, 300)
    registry.add_cron("renewal", "Renewal", noop, "0 9 * * *", timezone="Europe/Paris")
    registry.add_interval("hourly", "Hourly", noop, 3600)
    fake.add_schedule(
        TASK,
        "0 9 * * *",
        deduplication_key="bgjobs:production:renewal",
        external_id="renewal",
        timezone="Europe/Paris",
    )
    fake.add_schedule(TASK, "0 0 * * *", deduplication_key="bgjobs:production:hourly")
    fake.add_schedule(TASK, "0 0 * * *", deduplication_key="bgjobs:production:old-job")

    report = sync_registry(registry, env=trigger_env(fake), prune=True, timeout=10)

    assert (report.created, report.updated, report.unchanged, report.removed) == (
        ["repository-sync"],
        ["hourly"],
        ["renewal"],
        ["old-job"],
    )
    assert report.lines() == [
        "created  repository-sync  */5 * * * *  UTC",
        "updated  hourly  0 * * * *  UTC",
        "unchanged  renewal  0 9 * * *  Europe/Paris",
        "removed  old-job",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.created = []  # type: ignore[misc]
    assert sorted(s["deduplicationKey"] for s in fake.schedules) == [
        "bgjobs:production:hourly",
        "bgjobs:production:renewal",
        "bgjobs:production:repository-sync",
    ]

    fake.clear_requests()
    again = sync_registry(registry, env=trigger_env(fake))
    assert again.unchanged == ["repository-sync", "renewal", "hourly"]
    assert again.removed == [] and fake.writes() == []


def test_sync_registry_uses_a_given_manager(
    manager: TriggerDevJobManager, fake: FakeTriggerDev
) -> None:
    registry = JobRegistry()
    registry.add_interval("job", "Job", noop, 60)
    report = sync_registry(registry, manager=manager, timeout=5)
    assert report == SyncReport(created=["job"], schedules={"job": ("* * * * *", "UTC")})
    assert manager.get_job_status("job") is not None
    manager.schedule_job("other", "Other", noop, 300)  # the manager is still usable
    assert manager.sync(timeout=5) == {"job": "created", "other": "created"}


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({}, "TRIGGER_DEV_API_KEY"),
        ({"TRIGGER_DEV_ENABLED": "1"}, "TRIGGER_DEV_API_KEY"),
        ({"TRIGGER_DEV_API_KEY": SECRET, "TRIGGER_DEV_API_URL": "ftp://x"}, "TRIGGER_DEV_API_URL"),
    ],
)
def test_sync_registry_without_full_configuration_fails_clearly(
    env: Any, match: str, fake: FakeTriggerDev
) -> None:
    registry = JobRegistry()
    registry.add_interval("job", "Job", noop, 300)
    with pytest.raises(ValueError, match=match) as info:
        sync_registry(registry, env=env)
    assert SECRET not in str(info.value)
    assert fake.requests == []


def test_sync_registry_checks_every_schedule_before_sending_anything(
    fake: FakeTriggerDev,
) -> None:
    registry = JobRegistry()
    registry.add_interval("fine", "Fine", noop, 300)
    registry.add_interval("odd", "Odd", noop, 7 * 60)
    with pytest.raises(InvalidScheduleError, match="'odd'"):
        sync_registry(registry, env=trigger_env(fake))
    assert fake.requests == []


def test_sync_with_no_jobs_returns_at_once(manager: TriggerDevJobManager) -> None:
    assert manager.sync(timeout=0) == {}
