"""A fire of a remote schedule that never reached the app is logged and counted once.

The Trigger.dev dispatcher sends ``Bgjobs-Scheduled-For`` (this fire) and
``Bgjobs-Previous-Fire`` (the schedule's fire before it) with every dispatch.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import pytest
from support_web import bearer, body, web_client

from bgjobs.local import LocalJobManager

SECRET = "s3cr3t-value-for-tests"
DAY = 24 * 3600.0
FIRES = [f"2026-03-0{day}T09:00:00.000Z" for day in range(1, 5)]


def fire(
    client: Any,
    scheduled_for: Optional[str],
    previous: Optional[str] = None,
    key: Optional[str] = None,
) -> Any:
    headers: Dict[str, str] = bearer(SECRET)
    if scheduled_for is not None:
        headers["Bgjobs-Scheduled-For"] = scheduled_for
        headers["Idempotency-Key"] = key or f"bgjobs:run:{scheduled_for}"
    if previous is not None:
        headers["Bgjobs-Previous-Fire"] = previous
    return client.post("/api/cron/report", headers=headers)


def missed_warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "never reached the app" in r.getMessage()
    ]


@pytest.fixture
def client(manager: LocalJobManager) -> Any:
    manager.schedule_job("report", "Report", lambda: None, DAY)
    return web_client(manager, SECRET)


def test_the_fire_time_is_recorded_on_the_run(client: Any, manager: LocalJobManager) -> None:
    answer = fire(client, FIRES[0])
    assert answer.status_code == 200
    assert body(answer)["run"]["scheduled_for"] == "2026-03-01T09:00:00+00:00"
    (run,) = manager.get_job_runs("report")
    assert run.scheduled_for == datetime(2026, 3, 1, 9, tzinfo=timezone.utc)


def test_an_async_dispatch_records_the_fire_time_too(client: Any, manager: LocalJobManager) -> None:
    headers = {**bearer(SECRET), "Bgjobs-Scheduled-For": FIRES[1], "Prefer": "respond-async"}
    answer = client.post("/api/cron/report", headers=headers)
    assert answer.status_code == 202
    assert body(answer)["scheduled_for"] == "2026-03-02T09:00:00+00:00"


def test_the_flask_extension_reads_the_same_headers(tmp_path: Any) -> None:
    from flask import Flask

    from bgjobs import JobRegistry
    from bgjobs.flask import BGJobs, get_manager

    registry = JobRegistry()
    registry.add_interval("report", "Report", lambda: None, DAY)
    app = Flask("missedfires", instance_path=str(tmp_path))
    app.config.update(BGJOBS_SECRET=SECRET, BGJOBS_MODE="local", BGJOBS_ENV="production")
    BGJobs(app, registry=registry)
    try:
        client = app.test_client()
        headers = {**bearer(SECRET), "Bgjobs-Scheduled-For": FIRES[0]}
        answer = client.post("/api/cron/report", headers=headers)
        assert body(answer)["run"]["scheduled_for"] == "2026-03-01T09:00:00+00:00"
        headers["Bgjobs-Previous-Fire"] = "not a time"
        assert client.post("/api/cron/report", headers=headers).status_code == 400
    finally:
        get_manager(app).stop_all_jobs(wait=True, timeout=5)


def test_a_previous_fire_on_record_is_neither_logged_nor_counted(
    client: Any, manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bgjobs")
    assert fire(client, FIRES[0]).status_code == 200
    assert fire(client, FIRES[1], previous=FIRES[0]).status_code == 200
    assert fire(client, FIRES[2], previous=FIRES[1]).status_code == 200

    assert missed_warnings(caplog) == []
    status = manager.get_job_status("report")
    assert status is not None and status.skips == 0 and status.runs == 3


def test_a_missed_previous_fire_is_logged_and_counted_once_despite_retries(
    client: Any, manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bgjobs")
    assert fire(client, FIRES[0]).status_code == 200
    # FIRES[1] never arrives: the app was down past the dispatcher's retries.
    assert fire(client, FIRES[2], previous=FIRES[1]).status_code == 200
    # The same fire again (a retry of the run, then its next key after a failure).
    assert fire(client, FIRES[2], previous=FIRES[1]).status_code == 200
    assert fire(client, FIRES[2], previous=FIRES[1], key="bgjobs:run:x#2").status_code == 200

    (warning,) = missed_warnings(caplog)
    assert "'report'" in warning and "2026-03-02T09:00:00+00:00" in warning
    status = manager.get_job_status("report")
    assert status is not None and status.skips == 1
    assert manager.get_job_metrics().skipped_executions == 1


def test_a_store_with_no_earlier_fire_cannot_tell_and_reports_nothing(
    client: Any, manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    # A new host or the first deploy of this version: no history to judge by.
    assert fire(client, FIRES[2], previous=FIRES[1]).status_code == 200
    assert missed_warnings(caplog) == []
    status = manager.get_job_status("report")
    assert status is not None and status.skips == 0


def test_a_previous_fire_that_arrived_while_paused_is_not_missed(
    client: Any, manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    assert fire(client, FIRES[0]).status_code == 200
    manager.pause_job("report")
    assert fire(client, FIRES[1], previous=FIRES[0]).status_code == 409
    manager.resume_job("report")
    assert fire(client, FIRES[2], previous=FIRES[1]).status_code == 200
    assert missed_warnings(caplog) == []


@pytest.mark.parametrize(
    "header", ["Bgjobs-Scheduled-For", "Bgjobs-Previous-Fire"], ids=["scheduled", "previous"]
)
@pytest.mark.parametrize("value", ["yesterday", "2026-03-01T09:00:00", ""])
def test_a_bad_fire_time_is_refused_naming_the_header_job_and_value(
    client: Any, manager: LocalJobManager, header: str, value: str
) -> None:
    headers = {**bearer(SECRET), header: value}
    answer = client.post("/api/cron/report", headers=headers)
    assert answer.status_code == 400
    message = body(answer)["error"]["message"]
    assert header in message and "'report'" in message and repr(value) in message
    status = manager.get_job_status("report")
    assert status is not None and status.runs == 0
