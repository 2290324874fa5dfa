"""The second-wave HTTP endpoints: run history, one run, pause/resume, Prometheus metrics,
``Idempotency-Key`` and ``Prefer: respond-async`` on dispatch, and the page's new fields."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, cast

import pytest
from support_web import WAIT, BlockingJob, ThreadResult, bearer, body, in_thread, utc, web_client
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, TestResponse

from bgjobs.local import LocalJobManager
from bgjobs.noop import NoOpJobManager
from bgjobs.types import BackgroundJobManager, JobMetrics, JobStatus
from bgjobs.wsgi import create_app, render_status_page, wants_async

SECRET = "history-secret"
HOUR = 3600.0
API = "/api/cron"
AUTH = bearer(SECRET)
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RUN_KEYS = {
    "run_id",
    "job_id",
    "trigger",
    "scheduled_for",
    "started",
    "finished",
    "duration",
    "outcome",
    "error",
    "traceback",
    "attempt",
    "pid",
    "host",
}
FINAL = {"completed", "failed", "abandoned", "timed_out"}


def client_for(manager: BackgroundJobManager, **kwargs: Any) -> Client:
    return cast(Client, web_client(manager, SECRET, **kwargs))


def error_message(response: TestResponse, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    payload = body(response)
    assert payload["error"]["status"] == status
    message: str = payload["error"]["message"]
    return message


def noop() -> None:
    pass


def boom() -> None:
    raise ValueError("kaboom")


@pytest.fixture
def client(manager: LocalJobManager) -> Client:
    manager.schedule_job("sync", "Sync", noop, HOUR)
    manager.schedule_job("boom", "Boom", boom, HOUR)
    return client_for(manager)


# -- routing, methods, authentication -----------------------------------------------------------

NEW_ROUTES = {
    f"{API}/sync/runs": ("GET", "HEAD", "OPTIONS"),
    f"{API}/runs/some-run-id": ("GET", "HEAD", "OPTIONS"),
    f"{API}/metrics": ("GET", "HEAD", "OPTIONS"),
    f"{API}/sync/pause": ("POST", "OPTIONS"),
    f"{API}/sync/resume": ("POST", "OPTIONS"),
}


@pytest.mark.parametrize("path", sorted(NEW_ROUTES))
def test_new_routes_need_the_secret(client: Client, path: str) -> None:
    method = NEW_ROUTES[path][0]
    for headers in ({}, bearer("wrong")):
        response = client.open(path, method=method, headers=headers)
        assert "Bearer" in error_message(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", sorted(NEW_ROUTES))
def test_new_routes_answer_options_and_405_with_allow(client: Client, path: str) -> None:
    allowed = NEW_ROUTES[path]
    response = client.open(path, method="OPTIONS")
    assert response.status_code == 204
    assert response.headers["Allow"] == ", ".join(allowed)
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        if method in allowed:
            continue
        response = client.open(path, method=method, headers=AUTH)
        assert method in error_message(response, 405)
        assert response.headers["Allow"] == ", ".join(allowed)


@pytest.mark.parametrize(
    "path",
    ["/runs", "/runs/", "/metrics/runs", "/status/pause", "/runs/a/b", "/sync/other", "/sync/"],
)
def test_reserved_and_unknown_paths_are_404(client: Client, path: str) -> None:
    assert "no bgjobs endpoint" in error_message(client.get(API + path, headers=AUTH), 404)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "", "1.5", " 5", "9" * 5000])
def test_runs_limit_out_of_range_is_400_naming_it(client: Client, limit: str) -> None:
    response = client.get(f"{API}/sync/runs", query_string={"limit": limit}, headers=AUTH)
    assert "limit" in error_message(response, 400)


@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "caf\u00e9", "tab\there", "new\x7fline"])
def test_bad_idempotency_key_is_400_naming_the_header(
    client: Client, manager: LocalJobManager, key: str
) -> None:
    headers = {**AUTH, "Idempotency-Key": key}
    response = client.post(f"{API}/sync", headers=headers)
    assert "Idempotency-Key" in error_message(response, 400)
    assert manager.get_job_status("sync").runs == 0  # type: ignore[union-attr]


def test_idempotency_key_on_a_manager_without_run_records_is_refused() -> None:
    client = client_for(NoOpJobManager())
    response = client.post(f"{API}/sync", headers={**AUTH, "Idempotency-Key": "k-1"})
    assert "Idempotency-Key" in error_message(response, 501)


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        (None, False),
        ("", False),
        ("respond-async", True),
        ("Respond-Async", True),
        ("wait=10, respond-async", True),
        ("respond-async; foo=bar", True),
        ("  respond-async  ,return=minimal", True),
        ("return=representation", False),
        ('foo="a, respond-async", wait=5', False),
        ("respond-asynchronously", False),
    ],
)
def test_prefer_header_is_parsed_per_rfc_7240(header: Optional[str], wanted: bool) -> None:
    assert wants_async(header) is wanted


# -- metrics ------------------------------------------------------------------------------------


def parse_metrics(text: str) -> Dict[str, Dict[Any, float]]:
    """Sample name -> {frozenset(labels): value}, through Prometheus' own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Dict[str, Dict[Any, float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name  # every family has its # HELP
        for sample in family.samples:
            labels = frozenset(sample.labels.items())
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def test_metrics_parse_as_prometheus_text_and_count_runs(
    client: Client, manager: LocalJobManager
) -> None:
    assert manager.trigger_job("sync") and manager.trigger_job("sync")
    assert manager.trigger_job("boom")

    response = client.get(f"{API}/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == PROMETHEUS_TYPE
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert "# TYPE bgjobs_runs_total counter" in text
    assert "# TYPE bgjobs_job_running gauge" in text
    samples = parse_metrics(text)

    def value(name: str, **labels: str) -> float:
        return samples[name][frozenset(labels.items())]

    assert value("bgjobs_runs_total", job="sync", outcome="completed") == 2
    assert value("bgjobs_runs_total", job="sync", outcome="failed") == 0
    assert value("bgjobs_runs_total", job="boom", outcome="failed") == 1
    assert value("bgjobs_skips_total", job="sync") == 0
    assert value("bgjobs_job_running", job="sync") == 0
    assert value("bgjobs_job_paused", job="sync") == 0
    status = manager.get_job_status("sync")
    assert status is not None and status.last_run is not None and status.next_run is not None
    assert value("bgjobs_last_run_timestamp_seconds", job="sync") == status.last_run.timestamp()
    assert value("bgjobs_next_run_timestamp_seconds", job="sync") == status.next_run.timestamp()
    assert value("bgjobs_last_duration_seconds", job="sync") == status.duration
    assert value("bgjobs_executions_total") == 3
    assert value("bgjobs_successful_executions_total") == 2
    assert value("bgjobs_failed_executions_total") == 1
    assert value("bgjobs_skipped_executions_total") == 0
    assert "bgjobs_average_duration_seconds" in samples
    # Unknown times have no sample (not a misleading 0).
    assert frozenset({("job", "boom")}) not in samples.get(
        "bgjobs_last_success_timestamp_seconds", {}
    )


def test_metrics_head_has_no_body(client: Client) -> None:
    response = client.head(f"{API}/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.get_data() == b""


def test_metrics_escape_label_values() -> None:
    from bgjobs._web.prometheus import escape_label_value, render_metrics

    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    weird = 'we"ird\\job\nid'
    statuses = [
        JobStatus(
            id=weird,
            name="Weird",
            status="paused",
            runs=3,
            failures=1,
            last_run=utc(2024, 5, 1, 9),
            last_success=utc(2024, 5, 1, 8),
        )
    ]
    metrics = JobMetrics(3, 2, 1, 0.5, utc(2024, 5, 1))
    text = render_metrics(statuses, metrics)
    assert 'job="we\\"ird\\\\job\\nid"' in text
    samples = parse_metrics(text)
    assert samples["bgjobs_job_paused"][frozenset({("job", weird)})] == 1
    assert samples["bgjobs_runs_total"][frozenset({("job", weird), ("outcome", "completed")})] == 2
    assert samples["bgjobs_last_success_timestamp_seconds"][frozenset({("job", weird)})] == (
        utc(2024, 5, 1, 8).timestamp()
    )


# -- the page -----------------------------------------------------------------------------------


def test_page_shows_paused_last_success_and_the_last_error_kept_after_success() -> None:
    statuses = [
        JobStatus(
            id="report",
            name="Report",
            status="paused",
            runs=4,
            failures=1,
            last_run=utc(2024, 5, 1, 10),
            last_success=utc(2024, 5, 1, 10),
            last_failure=utc(2024, 5, 1, 9),
            last_error="ValueError: <b>bad</b>",
        )
    ]
    page = render_status_page(statuses, JobMetrics(4, 3, 1, 0.1, utc(2024, 5, 1)))
    assert '<span class="badge paused">paused</span>' in page
    assert ".badge.paused" in page
    assert "Last success (UTC)" in page and "Last error" in page
    assert 'datetime="2024-05-01T10:00:00+00:00"' in page
    assert "earlier at" in page and "ValueError: &lt;b&gt;bad&lt;/b&gt;" in page
    assert "<b>bad" not in page


# -- history, pause and resume ------------------------------------------------------------------


def test_dispatch_answers_the_status_plus_this_run(client: Client) -> None:
    response = client.post(f"{API}/sync", headers=AUTH)
    assert response.status_code == 200
    payload = body(response)
    assert payload["id"] == "sync" and payload["status"] == "completed"
    run = payload["run"]
    assert set(run) == RUN_KEYS
    assert run["job_id"] == "sync" and run["trigger"] == "http"
    assert run["outcome"] == "completed" and run["finished"] is not None
    assert "Idempotent-Replayed" not in response.headers

    failed = body(client.post(f"{API}/boom", headers=AUTH))
    assert failed["status"] == "failed" and failed["run"]["outcome"] == "failed"
    assert "kaboom" in failed["run"]["error"]


def test_runs_lists_newest_first_with_limit(client: Client) -> None:
    ids = [body(client.post(f"{API}/sync", headers=AUTH))["run"]["run_id"] for _ in range(3)]

    payload = body(client.get(f"{API}/sync/runs", headers=AUTH))
    assert set(payload) == {"job_id", "runs"} and payload["job_id"] == "sync"
    assert [r["run_id"] for r in payload["runs"]] == ids[::-1]
    assert all(set(r) == RUN_KEYS for r in payload["runs"])

    limited = body(client.get(f"{API}/sync/runs?limit=2", headers=AUTH))
    assert [r["run_id"] for r in limited["runs"]] == ids[:0:-1]
    assert client.head(f"{API}/sync/runs", headers=AUTH).status_code == 200


def test_runs_and_run_of_unknown_ids_are_404(client: Client) -> None:
    assert "nope" in error_message(client.get(f"{API}/nope/runs", headers=AUTH), 404)
    assert "nope" in error_message(client.get(f"{API}/runs/nope", headers=AUTH), 404)


def test_run_by_id_answers_the_run(client: Client) -> None:
    run = body(client.post(f"{API}/boom", headers=AUTH))["run"]
    response = client.get(f"{API}/runs/{run['run_id']}", headers=AUTH)
    assert response.status_code == 200
    assert body(response) == run


def test_pause_refuses_dispatch_with_409_and_resume_allows_it(
    client: Client, manager: LocalJobManager
) -> None:
    response = client.post(f"{API}/sync/pause", headers=AUTH)
    assert response.status_code == 200
    assert body(response)["status"] == "paused" and body(response)["id"] == "sync"

    refused = client.post(f"{API}/sync", headers=AUTH)
    assert "paused" in error_message(refused, 409)
    assert body(refused)["job"]["status"] == "paused"
    assert manager.get_job_status("sync").runs == 0  # type: ignore[union-attr]

    response = client.post(f"{API}/sync/resume", headers=AUTH)
    assert response.status_code == 200 and body(response)["status"] != "paused"
    assert client.post(f"{API}/sync", headers=AUTH).status_code == 200


def test_pause_and_resume_of_an_unknown_job_are_404(client: Client) -> None:
    for action in ("pause", "resume"):
        assert "nope" in error_message(client.post(f"{API}/nope/{action}", headers=AUTH), 404)


# -- Idempotency-Key ----------------------------------------------------------------------------


def test_idempotency_key_replays_the_recorded_run(client: Client, manager: LocalJobManager) -> None:
    headers = {**AUTH, "Idempotency-Key": "deploy-42"}
    first = client.post(f"{API}/sync", headers=headers)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers

    again = client.post(f"{API}/sync", headers=headers)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert body(again)["run"] == body(first)["run"]
    assert set(body(again)) == set(body(first))
    assert manager.get_job_status("sync").runs == 1  # type: ignore[union-attr]

    # Another key runs again; a key first used for another job is refused.
    assert client.post(f"{API}/sync", headers={**AUTH, "Idempotency-Key": "k2"}).status_code == 200
    assert manager.get_job_status("sync").runs == 2  # type: ignore[union-attr]
    assert "sync" in error_message(client.post(f"{API}/boom", headers=headers), 422)


def test_two_requests_with_one_key_at_once_run_the_job_once(manager: LocalJobManager) -> None:
    job = BlockingJob()
    manager.schedule_job("slow", "Slow", job, HOUR)
    client = client_for(manager)
    barrier = threading.Barrier(2)
    headers = {**AUTH, "Idempotency-Key": "same-key"}

    def request() -> TestResponse:
        barrier.wait(WAIT)
        return client.post(f"{API}/slow", headers=headers)

    results: List[ThreadResult] = [in_thread(request), in_thread(request)]
    assert job.started.wait(WAIT)
    # The request that did not win the key answers while the winner's run is still going.
    deadline = time.monotonic() + WAIT
    while all(r.thread is not None and r.thread.is_alive() for r in results):
        assert time.monotonic() < deadline, "neither request answered"
        time.sleep(0.01)
    job.release.set()
    responses = [r.get() for r in results]

    assert job.calls == 1
    assert sorted(r.status_code for r in responses) == [200, 200]
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 1
    run_ids = {body(r)["run"]["run_id"] for r in responses}
    assert len(run_ids) == 1


# -- Prefer: respond-async ---------------------------------------------------------------------


def poll_run(client: Client, location: str) -> Dict[str, Any]:
    """GET ``location`` until the run's outcome is final; fails after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        run: Dict[str, Any] = body(client.get(location, headers=AUTH))
        if run["outcome"] in FINAL:
            return run
        assert time.monotonic() < deadline, f"run still {run['outcome']} after {WAIT}s"
        time.sleep(0.01)


def test_respond_async_answers_202_with_location_then_the_run_finishes(
    manager: LocalJobManager,
) -> None:
    job = BlockingJob()
    manager.schedule_job("slow", "Slow", job, HOUR)
    client = client_for(manager)

    response = client.post(f"{API}/slow", headers={**AUTH, "Prefer": "respond-async, wait=0"})
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "respond-async"
    run = body(response)
    assert set(run) == RUN_KEYS and run["outcome"] == "running" and run["job_id"] == "slow"
    assert response.headers["Location"] == f"{API}/runs/{run['run_id']}"

    assert job.started.wait(WAIT)  # off the request's thread, which has already answered
    assert body(client.get(response.headers["Location"], headers=AUTH))["outcome"] == "running"
    job.release.set()
    final = poll_run(client, response.headers["Location"])
    assert final["outcome"] == "completed" and final["run_id"] == run["run_id"]
    assert job.calls == 1


def test_respond_async_location_includes_the_mount_point(manager: LocalJobManager) -> None:
    manager.schedule_job("sync", "Sync", noop, HOUR)
    app = DispatcherMiddleware(
        lambda e, s: [], {"/mounted": create_app(manager, secret=SECRET, prefix="", env={})}
    )
    client = Client(app)
    response = client.post("/mounted/sync", headers={**AUTH, "Prefer": "respond-async"})
    assert response.status_code == 202
    location = response.headers["Location"]
    assert location.startswith("/mounted/runs/")
    assert poll_run(client, location)["outcome"] == "completed"


def test_respond_async_with_a_known_key_replays_without_running(
    manager: LocalJobManager,
) -> None:
    manager.schedule_job("sync", "Sync", noop, HOUR)
    client = client_for(manager)
    headers = {**AUTH, "Prefer": "respond-async", "Idempotency-Key": "async-1"}
    first = client.post(f"{API}/sync", headers=headers)
    assert first.status_code == 202
    poll_run(client, first.headers["Location"])

    again = client.post(f"{API}/sync", headers=headers)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert body(again)["run"]["run_id"] == body(first)["run_id"]
    assert manager.get_job_status("sync").runs == 1  # type: ignore[union-attr]
