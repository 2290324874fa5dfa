"""The framework-free WSGI endpoints (bgjobs.wsgi), through werkzeug's test client.

``manager`` is conftest's fresh LocalJobManager; jobs get hour-long intervals so that only
the requests under test run them.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, cast

import pytest
from support_web import BlockingJob, ThreadResult, bearer, body, in_thread, web_client
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, TestResponse

import bgjobs.wsgi
from bgjobs.local import LocalJobManager
from bgjobs.noop import NoOpJobManager
from bgjobs.types import BackgroundJobManager, JobMetrics, JobStatus
from bgjobs.wsgi import Endpoints, create_app, normalize_prefix, render_status_page

SECRET = "s3cr3t-value-for-tests"
HOUR = 3600.0
STATUS_KEYS = {
    "id",
    "name",
    "status",
    "last_run",
    "next_run",
    "duration",
    "error",
    "schedule",
    "runs",
    "failures",
    "skips",
    "runner",
    "last_sync_error",
    "last_success",
    "last_failure",
    "last_error",
    "running_pid",
    "timed_out",
    "waiting_since",
    "starved_fires",
}
METRIC_KEYS = {
    "total_executions",
    "successful_jobs",
    "failed_jobs",
    "average_job_duration",
    "last_cleanup",
    "skipped_executions",
    "timed_out_executions",
    "starved_fires",
}


def client_for(manager: BackgroundJobManager, **kwargs: Any) -> Client:
    return cast(Client, web_client(manager, SECRET, **kwargs))


def assert_error(response: TestResponse, status: int) -> str:
    assert response.status_code == status
    payload = body(response)
    assert set(payload) <= {"error", "job"}
    assert payload["error"]["status"] == status
    message = payload["error"]["message"]
    assert isinstance(message, str) and message
    return message


def parse_utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


# -- authentication ---------------------------------------------------------------------------


def test_request_without_authorization_is_refused(manager: LocalJobManager) -> None:
    manager.schedule_job("sync", "Sync", lambda: None, HOUR)
    client = client_for(manager)

    for path in ("/api/cron/status", "/api/cron/sync", "/api/cron/"):
        response = client.get(path)
        message = assert_error(response, 401)
        assert "Bearer" in message
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert manager.get_job_status("sync").runs == 0  # type: ignore[union-attr]


def test_wrong_secret_is_refused_and_never_echoed(manager: LocalJobManager) -> None:
    manager.schedule_job("sync", "Sync", lambda: None, HOUR)
    client = client_for(manager)

    for header in ("Bearer nope", f"Bearer {SECRET}x", f"Basic {SECRET}", SECRET, "Bearer "):
        response = client.post("/api/cron/sync", headers={"Authorization": header})
        assert_error(response, 401)
        assert SECRET not in response.get_data(as_text=True)
    assert manager.get_job_status("sync").runs == 0  # type: ignore[union-attr]


def test_right_secret_is_accepted_and_scheme_is_case_insensitive(
    manager: LocalJobManager,
) -> None:
    client = client_for(manager)
    assert client.get("/api/cron/status", headers=bearer(SECRET)).status_code == 200
    assert (
        client.get("/api/cron/status", headers={"Authorization": f"bearer  {SECRET} "}).status_code
        == 200
    )


def test_secret_is_compared_in_constant_time(
    manager: LocalJobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: List[tuple[bytes, bytes, bool]] = []
    real = bgjobs.wsgi.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        result = real(a, b)
        calls.append((a, b, result))
        return result

    monkeypatch.setattr(bgjobs.wsgi.hmac, "compare_digest", spy)
    client = client_for(manager)
    client.get("/api/cron/status", headers=bearer("guess"))
    client.get("/api/cron/status", headers=bearer(SECRET))
    assert [result for _, _, result in calls] == [False, True]
    # Fixed-length digests are compared, so not even the secret's length leaks.
    assert {len(a) for a, _, _ in calls} == {len(b) for _, b, _ in calls} == {32}
    assert all(SECRET.encode() not in (a, b) for a, b, _ in calls)


def test_secret_comes_from_bgjobs_secret_before_cron_secret(manager: LocalJobManager) -> None:
    env = {"BGJOBS_SECRET": "primary", "CRON_SECRET": "vercel", "BGJOBS_ENV": "production"}
    client = Client(create_app(manager, env=env))
    assert client.get("/api/cron/status", headers=bearer("primary")).status_code == 200
    assert client.get("/api/cron/status", headers=bearer("vercel")).status_code == 401

    client = Client(create_app(manager, env={"CRON_SECRET": "vercel", "BGJOBS_SECRET": " "}))
    assert client.get("/api/cron/status", headers=bearer("vercel")).status_code == 200

    client = Client(create_app(manager, secret="explicit", env=env))
    assert client.get("/api/cron/status", headers=bearer("explicit")).status_code == 200
    assert client.get("/api/cron/status", headers=bearer("primary")).status_code == 401


def test_no_secret_is_allowed_in_development_only(manager: LocalJobManager) -> None:
    for env in ({}, {"APP_ENV": "development"}, {"BGJOBS_ENV": "Development"}):
        client = Client(create_app(manager, env=env))
        assert client.get("/api/cron/status").status_code == 200, env

    for env in ({"BGJOBS_ENV": "production"}, {"APP_ENV": "staging"}):
        client = Client(create_app(manager, env=env))
        message = assert_error(client.get("/api/cron/status"), 401)
        assert "no secret is configured" in message
        assert "BGJOBS_SECRET" in message
        # Not even a made-up Bearer token gets in.
        assert client.get("/api/cron/status", headers=bearer("x")).status_code == 401


def test_secret_is_read_from_os_environ_by_default(
    manager: LocalJobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BGJOBS_SECRET", "from-environ")
    monkeypatch.setenv("BGJOBS_ENV", "production")
    client = Client(create_app(manager))
    assert client.get("/api/cron/status", headers=bearer("from-environ")).status_code == 200
    assert client.get("/api/cron/status").status_code == 401


def test_secret_never_appears_in_logs(
    manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    manager.schedule_job("sync", "Sync", lambda: None, HOUR)
    caplog.set_level(logging.DEBUG)
    client = client_for(manager)
    client.get("/api/cron/status", headers=bearer(SECRET))
    client.post("/api/cron/sync", headers=bearer(SECRET))
    client.post("/api/cron/sync", headers=bearer(SECRET + "-wrong"))
    client.get(f"/api/cron/?token={SECRET}-wrong-token")
    assert caplog.records  # dispatch and refusals are logged ...
    assert SECRET not in caplog.text  # ... without the secret or a guess at it
    assert repr(create_app(manager, secret=SECRET)).find(SECRET) == -1


def test_token_query_parameter_opens_only_the_page(manager: LocalJobManager) -> None:
    manager.schedule_job("sync", "Sync", lambda: None, HOUR)
    client = client_for(manager)
    assert client.get(f"/api/cron/?token={SECRET}").status_code == 200
    assert client.get(f"/api/cron?token={SECRET}").status_code == 200
    assert client.get("/api/cron/?token=wrong").status_code == 401
    assert client.get(f"/api/cron/status?token={SECRET}").status_code == 401
    assert client.post(f"/api/cron/sync?token={SECRET}").status_code == 401
    assert manager.get_job_status("sync").runs == 0  # type: ignore[union-attr]


def test_unknown_job_needs_authentication_before_404(manager: LocalJobManager) -> None:
    client = client_for(manager)
    assert_error(client.get("/api/cron/nope"), 401)  # existence is not revealed
    message = assert_error(client.get("/api/cron/nope", headers=bearer(SECRET)), 404)
    assert "'nope'" in message


# -- status -------------------------------------------------------------------------------------


def test_status_lists_every_job_and_the_metrics(manager: LocalJobManager) -> None:
    manager.schedule_job("first", "First", lambda: None, HOUR)
    manager.schedule_cron_job("second", "Second", lambda: None, "0 9 * * *")
    manager.trigger_job("first")

    response = client_for(manager).get("/api/cron/status", headers=bearer(SECRET))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    payload = body(response)
    assert set(payload) == {"jobs", "metrics"}
    assert [job["id"] for job in payload["jobs"]] == ["first", "second"]
    for job in payload["jobs"]:
        assert set(job) == STATUS_KEYS
        assert job["next_run"] is not None
        parse_utc(job["next_run"])
    first = payload["jobs"][0]
    assert first["status"] == "completed"
    assert first["runs"] == 1
    assert first["schedule"] == "every 1h"
    parse_utc(first["last_run"])
    assert payload["jobs"][1]["last_run"] is None
    assert set(payload["metrics"]) == METRIC_KEYS
    assert payload["metrics"]["total_executions"] == 1
    assert payload["metrics"]["successful_jobs"] == 1
    parse_utc(payload["metrics"]["last_cleanup"])


def test_status_entries_equal_the_status_to_dict(manager: LocalJobManager) -> None:
    manager.schedule_job("a", "A", lambda: None, HOUR)
    payload = body(client_for(manager).get("/api/cron/status", headers=bearer(SECRET)))
    assert payload["jobs"] == [s.to_dict() for s in manager.get_all_job_statuses()]


def test_head_on_status_sends_headers_only(manager: LocalJobManager) -> None:
    response = client_for(manager).head("/api/cron/status", headers=bearer(SECRET))
    assert response.status_code == 200
    assert response.get_data() == b""
    assert int(response.headers["Content-Length"]) > 0


# -- dispatch -----------------------------------------------------------------------------------


def test_dispatch_runs_the_job_and_answers_its_status(manager: LocalJobManager) -> None:
    calls: List[str] = []
    manager.schedule_job("sync", "Sync", lambda: calls.append("ran"), HOUR)
    client = client_for(manager)

    for method in ("GET", "POST"):
        response = client.open("/api/cron/sync", method=method, headers=bearer(SECRET))
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        job = body(response)
        assert set(job) == STATUS_KEYS | {"run"}  # "run": see test_http_history.py
        assert job["id"] == "sync"
        assert job["status"] == "completed"
        assert job["error"] is None
        parse_utc(job["last_run"])
    assert calls == ["ran", "ran"]
    job.pop("run")
    assert job == manager.get_job_status("sync").to_dict()  # type: ignore[union-attr]
    assert manager.get_job_metrics().total_executions == 2


def test_dispatch_of_a_failing_job_answers_200_with_the_failure(
    manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("database is down")

    manager.schedule_job("broken", "Broken", broken, HOUR)
    caplog.set_level(logging.CRITICAL, logger="bgjobs.execution")
    response = client_for(manager).post("/api/cron/broken", headers=bearer(SECRET))
    assert response.status_code == 200
    job = body(response)
    assert job["status"] == "failed"
    assert job["error"] == "RuntimeError: database is down"
    assert job["failures"] == 1


def test_dispatch_url_decodes_the_job_id(manager: LocalJobManager) -> None:
    calls: List[str] = []
    manager.schedule_job("café:daily%", "Café", lambda: calls.append("ran"), HOUR)
    response = client_for(manager).post("/api/cron/caf%C3%A9%3Adaily%25", headers=bearer(SECRET))
    assert response.status_code == 200
    assert body(response)["id"] == "café:daily%"
    assert calls == ["ran"]


def test_dispatch_of_a_running_job_answers_409(manager: LocalJobManager) -> None:
    job = BlockingJob()
    manager.schedule_job("slow", "Slow", job, HOUR)
    app = create_app(manager, secret=SECRET, env={})

    first: ThreadResult = in_thread(
        lambda: Client(app).post("/api/cron/slow", headers=bearer(SECRET))
    )
    assert job.started.wait(10)
    try:
        second = Client(app).post("/api/cron/slow", headers=bearer(SECRET))
        message = assert_error(second, 409)
        assert "already running" in message
        assert body(second)["job"]["status"] == "running"
        assert body(second)["job"]["id"] == "slow"
    finally:
        job.release.set()
    assert first.get().status_code == 200
    assert job.calls == 1
    assert manager.get_job_metrics().skipped_executions == 1


def test_dispatch_of_a_stopped_job_answers_409_and_does_not_run_it(
    manager: LocalJobManager,
) -> None:
    calls: List[str] = []
    manager.schedule_job("sync", "Sync", lambda: calls.append("ran"), HOUR)
    manager.stop_job("sync")
    response = client_for(manager).post("/api/cron/sync", headers=bearer(SECRET))
    message = assert_error(response, 409)
    assert "stopped" in message
    assert body(response)["job"]["status"] == "stopped"
    assert calls == []


def test_job_id_with_a_slash_or_empty_is_not_found(manager: LocalJobManager) -> None:
    client = client_for(manager)
    for path in ("/api/cron/a/b", "/api/cron//", "/api/cron/status/"):
        assert_error(client.get(path, headers=bearer(SECRET)), 404)


# -- methods and paths --------------------------------------------------------------------------


def test_other_methods_get_405_with_allow(manager: LocalJobManager) -> None:
    manager.schedule_job("sync", "Sync", lambda: None, HOUR)
    client = client_for(manager)
    cases = [
        ("DELETE", "/api/cron/sync", "GET, POST, OPTIONS"),
        ("PUT", "/api/cron/sync", "GET, POST, OPTIONS"),
        ("HEAD", "/api/cron/sync", "GET, POST, OPTIONS"),  # HEAD must not run a job
        ("PROPFIND", "/api/cron/sync", "GET, POST, OPTIONS"),
        ("POST", "/api/cron/status", "GET, HEAD, OPTIONS"),
        ("POST", "/api/cron/", "GET, HEAD, OPTIONS"),
    ]
    for method, path, allow in cases:
        response = client.open(path, method=method, headers=bearer(SECRET))
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == allow
        if method != "HEAD":
            assert_error(response, 405)
    assert manager.get_job_status("sync").runs == 0  # type: ignore[union-attr]


def test_options_answers_allow_without_authentication(manager: LocalJobManager) -> None:
    response = client_for(manager).options("/api/cron/sync")
    assert response.status_code == 204
    assert response.headers["Allow"] == "GET, POST, OPTIONS"


def test_paths_outside_the_prefix_are_404(manager: LocalJobManager) -> None:
    client = client_for(manager)
    for path in ("/", "/status", "/api/cronx/status", "/api/status"):
        message = assert_error(client.get(path, headers=bearer(SECRET)), 404)
        assert "/api/cron/" in message


def test_every_answer_is_uncacheable_json_with_one_error_shape(manager: LocalJobManager) -> None:
    client = client_for(manager)
    for response in (
        client.get("/elsewhere"),
        client.get("/api/cron/status"),
        client.delete("/api/cron/status", headers=bearer(SECRET)),
        client.get("/api/cron/missing", headers=bearer(SECRET)),
    ):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        payload = body(response)
        assert list(payload) == ["error"]
        assert set(payload["error"]) == {"status", "message"}


@pytest.mark.parametrize(
    ("prefix", "status_path"),
    [
        ("jobs/", "/jobs/status"),
        ("/a/b", "/a/b/status"),
        ("", "/status"),
        ("/", "/status"),
    ],
)
def test_prefix_is_normalized(manager: LocalJobManager, prefix: str, status_path: str) -> None:
    client = client_for(manager, prefix=prefix)
    assert client.get(status_path, headers=bearer(SECRET)).status_code == 200


def test_normalize_prefix() -> None:
    assert normalize_prefix("/api/cron/") == "/api/cron"
    assert normalize_prefix("api/cron") == "/api/cron"
    assert normalize_prefix("/") == ""
    with pytest.raises(TypeError, match="prefix"):
        normalize_prefix(None)  # type: ignore[arg-type]


def test_mounts_under_dispatcher_middleware(manager: LocalJobManager) -> None:
    manager.schedule_job("sync", "Sync", lambda: None, HOUR)

    def website(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"site"]

    app = DispatcherMiddleware(
        website, {"/api/cron": create_app(manager, secret=SECRET, env={}, prefix="")}
    )
    client = Client(app)
    assert client.get("/").get_data() == b"site"
    assert client.post("/api/cron/sync", headers=bearer(SECRET)).status_code == 200
    assert client.get("/api/cron/status", headers=bearer(SECRET)).status_code == 200


def test_an_exception_in_the_manager_answers_500_in_the_error_shape(
    manager: LocalJobManager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode() -> List[JobStatus]:
        raise RuntimeError("boom")

    monkeypatch.setattr(manager, "get_all_job_statuses", explode)
    caplog.set_level(logging.CRITICAL, logger="bgjobs.wsgi")
    response = client_for(manager).get("/api/cron/status", headers=bearer(SECRET))
    message = assert_error(response, 500)
    assert "boom" not in message


# -- managers without dispatch -------------------------------------------------------------------


def test_noop_manager_has_no_jobs(caplog: pytest.LogCaptureFixture) -> None:
    client = client_for(NoOpJobManager())
    payload = body(client.get("/api/cron/status", headers=bearer(SECRET)))
    assert payload["jobs"] == []
    assert payload["metrics"]["total_executions"] == 0
    assert_error(client.post("/api/cron/anything", headers=bearer(SECRET)), 404)


class _PlainManager(BackgroundJobManager):
    """A manager with only the ABC's methods (no ``dispatch``), for the fallback path."""

    def __init__(self, status: Optional[JobStatus], *, ran: bool = True) -> None:
        self.status = status
        self.ran = ran
        self.triggered: List[str] = []

    def schedule_job(self, id: str, name: str, job: Any, interval: Any) -> None:
        raise NotImplementedError

    def schedule_cron_job(
        self, id: str, name: str, job: Any, cron_expression: str, *, timezone: Any = None
    ) -> None:
        raise NotImplementedError

    def trigger_job(self, id: str) -> bool:
        self.triggered.append(id)
        return self.ran

    def stop_job(self, id: str) -> None:
        pass

    def stop_all_jobs(self, *, wait: bool = False, timeout: Optional[float] = None) -> bool:
        return True

    def get_job_status(self, id: str) -> Optional[JobStatus]:
        return self.status if self.status is not None and self.status.id == id else None

    def get_all_job_statuses(self) -> List[JobStatus]:
        return [self.status] if self.status is not None else []

    def get_job_metrics(self) -> JobMetrics:
        return JobMetrics(0, 0, 0, 0.0, datetime(2024, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize(
    ("state", "ran", "expected", "triggered"),
    [
        ("completed", True, 200, ["x"]),
        ("running", False, 409, ["x"]),
        ("stopped", True, 409, []),
    ],
)
def test_managers_without_dispatch_use_trigger_job(
    state: Any, ran: bool, expected: int, triggered: List[str]
) -> None:
    manager = _PlainManager(JobStatus(id="x", name="X", status=state), ran=ran)
    client = client_for(manager)
    assert client.post("/api/cron/x", headers=bearer(SECRET)).status_code == expected
    assert manager.triggered == triggered
    assert client.post("/api/cron/y", headers=bearer(SECRET)).status_code == 404


# -- the HTML page --------------------------------------------------------------------------------


def test_page_is_a_self_contained_escaped_status_table(manager: LocalJobManager) -> None:
    evil = "<script>alert('x')</script>"
    manager.schedule_job("evil", evil, lambda: None, HOUR)
    manager.schedule_job("plain", "Plain & simple", lambda: None, HOUR)
    manager.trigger_job("plain")

    response = client_for(manager).get(f"/api/cron/?token={SECRET}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = response.get_data(as_text=True)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Plain &amp; simple" in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert 'data-job-id="evil"' in page and 'data-job-id="plain"' in page
    assert "http://" not in page and "https://" not in page  # no external assets
    assert SECRET not in page


def test_page_shows_errors_and_metrics_escaped() -> None:
    last = datetime(2024, 5, 1, 9, 0, 0, tzinfo=timezone.utc)
    statuses = [
        JobStatus(
            id="j",
            name="J",
            status="failed",
            last_run=last,
            next_run=last + timedelta(hours=1),
            duration=1.5,
            error="ValueError: <b>bad</b>",
            schedule="cron 0 9 * * * (Europe/Paris)",
            runs=3,
            failures=1,
            skips=2,
            runner="another process (pid 17)",
            last_sync_error="HTTP 422 & more",
        )
    ]
    metrics = JobMetrics(3, 2, 1, 0.5, last, 2)
    page = render_status_page(statuses, metrics, now=last)
    assert "ValueError: &lt;b&gt;bad&lt;/b&gt;" in page
    assert "sync: HTTP 422 &amp; more" in page
    assert "2024-05-01 09:00:00" in page and "2024-05-01 10:00:00" in page
    assert 'datetime="2024-05-01T09:00:00+00:00"' in page
    assert "another process (pid 17)" in page
    assert "1.500 s" in page
    assert '<dd data-metric="Total executions">3</dd>' in page
    assert '<dd data-metric="Skipped (overlap)">2</dd>' in page


def test_page_without_jobs_says_so(manager: LocalJobManager) -> None:
    page = client_for(manager).get(f"/api/cron?token={SECRET}").get_data(as_text=True)
    assert "No jobs scheduled." in page


def test_endpoints_handle_is_usable_without_wsgi(manager: LocalJobManager) -> None:
    endpoints = Endpoints(manager, secret=SECRET, env={})
    answer = endpoints.handle("get", "/status", authorization=f"Bearer {SECRET}")
    assert answer.status == 200
    assert answer.status_line == "200 OK"
    assert json.loads(answer.body)["jobs"] == []


def test_wsgi_module_does_not_import_flask() -> None:
    code = "import sys, bgjobs.wsgi, bgjobs.vercel; print('flask' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("blank", ["   ", " \t ", " "])
def test_a_blank_secret_argument_counts_as_unset_like_a_blank_environment_value(
    manager: LocalJobManager, blank: str, caplog: pytest.LogCaptureFixture
) -> None:
    production = {"BGJOBS_ENV": "production"}
    for client in (
        Client(create_app(manager, secret=blank, env=production)),
        Client(create_app(manager, env={**production, "BGJOBS_SECRET": blank})),
    ):
        # No token of spaces opens the page or any endpoint: no secret is configured.
        assert client.get("/api/cron/?token=%20%20%20").status_code == 401
        assert client.get("/api/cron/", query_string={"token": blank}).status_code == 401
        assert client.get("/api/cron/status", headers=bearer(blank)).status_code == 401
        message = assert_error(client.get("/api/cron/status"), 401)
        assert "no secret is configured" in message
    assert "blank" in caplog.text
    # With a real secret in the environment, a blank argument does not override it.
    client = Client(create_app(manager, secret=blank, env={**production, "CRON_SECRET": "s3"}))
    assert client.get("/api/cron/status", headers=bearer("s3")).status_code == 200
    assert client.get("/api/cron/?token=%20%20%20").status_code == 401


def test_the_secret_argument_and_the_page_token_are_stripped_like_the_environment(
    manager: LocalJobManager,
) -> None:
    client = Client(create_app(manager, secret=" padded ", env={"BGJOBS_ENV": "production"}))
    assert client.get("/api/cron/status", headers=bearer("padded")).status_code == 200
    assert client.get("/api/cron/?token=%20padded%20").status_code == 200
    assert client.get("/api/cron/?token=padded").status_code == 200
