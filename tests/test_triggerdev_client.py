"""TriggerDevClient against a real HTTP fake of Trigger.dev (no mocking of requests)."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, List

import pytest
import requests
from fake_triggerdev import FakeTriggerDev, RecordedRequest
from openapi import OpenAPI

from bgjobs.errors import TriggerDevError
from bgjobs.triggerdev_client import TriggerDevClient

TASK = "bgjobs-dispatch"
KEY = "bgjobs:production:repository-sync"
ENCODED_KEY = "bgjobs%3Aproduction%3Arepository-sync"
SECRET = "tr_prod_S3cr3tK3y_do_not_leak_42"


@pytest.fixture
def fake() -> Iterator[FakeTriggerDev]:
    with FakeTriggerDev(api_key=SECRET) as server:
        yield server


@pytest.fixture
def sleeps() -> List[float]:
    return []


@pytest.fixture
def make_client(
    fake: FakeTriggerDev, sleeps: List[float]
) -> Iterator[Callable[..., TriggerDevClient]]:
    """Clients for the fake; sleeping is recorded, not done, unless ``sleep`` is given."""
    clients: List[TriggerDevClient] = []

    def make(**kwargs: Any) -> TriggerDevClient:
        kwargs.setdefault("sleep", sleeps.append)
        kwargs.setdefault("read_timeout", 5.0)
        client = TriggerDevClient(kwargs.pop("api_key", SECRET), fake.url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., TriggerDevClient]) -> TriggerDevClient:
    return make_client()


def assert_matches_spec(spec: OpenAPI, request: RecordedRequest, response: Any) -> None:
    """The request's query and body, and the response, are what the OpenAPI file says."""
    spec.validate_query(request.method, request.path, request.query)
    if spec.has_request_body(request.method, request.path):
        assert request.header("Content-Type") == "application/json"
        spec.validate_request(request.method, request.path, request.json)
    else:
        assert request.body == b"", f"{request.method} {request.path} takes no body"
    spec.validate_response(request.method, request.path, 200, response)


def backoff_ceiling(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    return min(cap, base * 2 ** (attempt - 1))


def assert_equal_jitter(sleeps: List[float], base: float = 0.5, cap: float = 30.0) -> None:
    for attempt, delay in enumerate(sleeps, start=1):
        ceiling = backoff_ceiling(attempt, base, cap)
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)


# -- each operation: path, body and response against the OpenAPI file ---------------


def test_create_schedule_posts_a_spec_valid_body_and_answers_200(
    client: TriggerDevClient, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    schedule = client.create_schedule(
        TASK,
        "*/5 * * * *",
        external_id="repository-sync",
        deduplication_key=KEY,
        timezone="Europe/Paris",
    )

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/api/v1/schedules")
    assert request.json == {
        "task": TASK,
        "cron": "*/5 * * * *",
        "deduplicationKey": KEY,
        "externalId": "repository-sync",
        "timezone": "Europe/Paris",
    }
    assert request.status == 200
    assert_matches_spec(spec, request, schedule)
    assert schedule["id"].startswith("sched_")
    assert schedule["deduplicationKey"] == KEY
    assert schedule["generator"]["expression"] == "*/5 * * * *"
    assert schedule["timezone"] == "Europe/Paris"
    assert schedule["active"] is True and "nextRun" in schedule


def test_create_schedule_upserts_by_deduplication_key(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    first = client.create_schedule(TASK, "*/5 * * * *", deduplication_key=KEY)
    second = client.create_schedule(TASK, "0 * * * *", deduplication_key=KEY)

    assert first["id"] == second["id"]
    assert second["generator"]["expression"] == "0 * * * *"
    assert len(fake.schedules) == 1


def test_create_schedule_without_a_key_makes_one_and_keeps_it_across_retries(
    client: TriggerDevClient, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    fake.drop_next()  # the first attempt's fate is unknown to the client
    client.create_schedule(TASK, "0 0 * * *")

    first, second = fake.requests
    spec.validate_request("POST", "/api/v1/schedules", first.json)
    assert first.json["deduplicationKey"] == second.json["deduplicationKey"]
    assert len(fake.schedules) == 1


def test_retrieve_schedule_by_id_and_by_url_encoded_key(
    client: TriggerDevClient, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    created = client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)
    fake.clear_requests()

    by_id = client.retrieve_schedule(created["id"])
    by_key = client.retrieve_schedule(KEY)

    assert by_id == by_key and by_id is not None and by_id["id"] == created["id"]
    id_request, key_request = fake.requests
    assert id_request.path == f"/api/v1/schedules/{created['id']}"
    assert key_request.path == f"/api/v1/schedules/{ENCODED_KEY}"
    assert_matches_spec(spec, key_request, by_key)


def test_retrieve_schedule_answers_none_for_a_missing_schedule(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    assert client.retrieve_schedule("bgjobs:production:nope") is None
    assert len(fake.requests) == 1


def test_update_schedule_puts_a_spec_valid_body_by_key(
    client: TriggerDevClient, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    created = client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)
    fake.clear_requests()

    updated = client.update_schedule(
        KEY,
        TASK,
        "30 9 * * 1-5",
        external_id="repository-sync",
        timezone="UTC",
    )

    (request,) = fake.requests
    assert (request.method, request.path) == ("PUT", f"/api/v1/schedules/{ENCODED_KEY}")
    assert request.json == {
        "task": TASK,
        "cron": "30 9 * * 1-5",
        "externalId": "repository-sync",
        "timezone": "UTC",
    }
    assert_matches_spec(spec, request, updated)
    assert updated["id"] == created["id"]
    assert updated["generator"]["expression"] == "30 9 * * 1-5"


def test_update_schedule_on_a_missing_id_creates_an_unkeyed_schedule_like_live(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    # Why the manager must look a schedule up before a PUT.
    created = client.update_schedule(KEY, TASK, "0 9 * * *")

    assert created["id"].startswith("sched_")
    assert "deduplicationKey" not in created
    assert client.retrieve_schedule(KEY) is None


def test_activate_and_deactivate_schedule(
    client: TriggerDevClient, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    created = client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)
    fake.clear_requests()

    off = client.deactivate_schedule(created["id"])
    on = client.activate_schedule(KEY)

    assert off["active"] is False and "nextRun" not in off
    assert on["active"] is True and "nextRun" in on
    deactivate, activate = fake.requests
    assert deactivate.path == f"/api/v1/schedules/{created['id']}/deactivate"
    assert activate.path == f"/api/v1/schedules/{ENCODED_KEY}/activate"
    assert_matches_spec(spec, deactivate, off)
    assert_matches_spec(spec, activate, on)


def test_activate_missing_schedule_raises_404_without_retrying(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    with pytest.raises(TriggerDevError) as info:
        client.activate_schedule("sched_missing")
    assert info.value.status == 404
    assert info.value.message == "Schedule not found"
    assert len(fake.requests) == 1


def test_delete_schedule_answers_true_then_false(
    client: TriggerDevClient, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)
    fake.clear_requests()

    assert client.delete_schedule(KEY) is True
    assert client.delete_schedule(KEY) is False

    first, second = fake.requests
    assert (first.method, first.path) == ("DELETE", f"/api/v1/schedules/{ENCODED_KEY}")
    assert (first.status, second.status) == (200, 404)
    assert first.body == b"" and spec.operation("DELETE", first.path)
    assert fake.schedules == []


def test_list_schedules_follows_every_page(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    seeded = [
        fake.add_schedule(TASK, "0 * * * *", deduplication_key=f"bgjobs:production:job-{i}")
        for i in range(23)
    ]
    client = make_client()

    listed = client.list_schedules(per_page=5)

    assert [s["id"] for s in listed] == [s["id"] for s in seeded]
    pages = [(r.query["page"], r.query["perPage"]) for r in fake.requests]
    assert pages == [([str(n)], ["5"]) for n in range(1, 6)]
    for request in fake.requests:
        spec.validate_query("GET", request.path, request.query)
    page = {"data": listed[:5], "pagination": {"currentPage": 1, "totalPages": 5, "count": 23}}
    spec.validate_response("GET", "/api/v1/schedules", 200, page)


def test_list_schedules_copes_with_a_server_cap_on_page_size(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    fake.max_per_page = 10
    for i in range(25):
        fake.add_schedule(TASK, "0 * * * *", deduplication_key=f"k{i}")

    listed = client.list_schedules(per_page=100)

    assert len({s["id"] for s in listed}) == len(listed) == 25
    assert len(fake.requests) == 3


def test_list_schedules_with_none_makes_one_request(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    assert client.list_schedules() == []
    assert len(fake.requests) == 1


def test_trigger_task_posts_payload_with_idempotency_key_and_returns_run_id(
    client: TriggerDevClient, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    run_id = client.trigger_task(TASK, {"externalId": "repository-sync"}, idempotency_key="k-1")

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", f"/api/v1/tasks/{TASK}/trigger")
    assert request.header("Idempotency-Key") == "k-1"
    assert request.json["payload"] == {"externalId": "repository-sync"}
    assert_matches_spec(spec, request, {"id": run_id})
    assert run_id.startswith("run_")
    # Same key, same run: the server deduplicates.
    assert client.trigger_task(TASK, {"externalId": "repository-sync"}, idempotency_key="k-1") == (
        run_id
    )
    assert len(fake.runs) == 1


def test_trigger_task_reuses_one_idempotency_key_across_retries(
    client: TriggerDevClient, fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    fake.fail_next(500)
    fake.drop_next()
    fake.hang_next(0.0)  # answered, but only after a (zero) wait

    run_id = client.trigger_task(TASK, {"externalId": "repository-sync"})

    keys = {r.header("Idempotency-Key") for r in fake.requests}
    assert len(fake.requests) == 3 and len(keys) == 1 and None not in keys
    assert {r.json["options"]["idempotencyKey"] for r in fake.requests} == keys
    assert [r["id"] for r in fake.runs] == [run_id]
    assert len(sleeps) == 2


def test_separate_trigger_calls_without_a_key_make_separate_runs(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    assert client.trigger_task(TASK, {}) != client.trigger_task(TASK, {})


def test_retrieve_run_uses_the_v3_path(
    client: TriggerDevClient, fake: FakeTriggerDev, spec: OpenAPI
) -> None:
    run_id = client.trigger_task(TASK, {"externalId": "x"}, idempotency_key="k")
    fake.clear_requests()

    run = client.retrieve_run(run_id)

    (request,) = fake.requests
    assert request.path == f"/api/v3/runs/{run_id}"
    assert_matches_spec(spec, request, run)
    assert run["id"] == run_id and run["taskIdentifier"] == TASK
    assert run["payload"] == {"externalId": "x"}


def test_retrieve_missing_run_raises_404(client: TriggerDevClient) -> None:
    with pytest.raises(TriggerDevError) as info:
        client.retrieve_run("run_missing")
    assert (info.value.status, info.value.message) == (404, "Run not found")
    assert info.value.path == "/api/v3/runs/run_missing"


# -- retries ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409])
def test_transient_statuses_are_retried_with_backoff_then_succeed(
    client: TriggerDevClient, fake: FakeTriggerDev, sleeps: List[float], status: int
) -> None:
    fake.fail_next(status, count=2)

    schedule = client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)

    assert [r.status for r in fake.requests] == [status, status, 200]
    assert len(sleeps) == 2
    assert_equal_jitter(sleeps)
    assert fake.schedule(KEY) == schedule


def test_dropped_connections_are_retried_then_succeed(
    client: TriggerDevClient, fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    fake.drop_next(count=2)

    assert client.retrieve_schedule(KEY) is None

    assert [r.fault for r in fake.requests] == ["drop", "drop", None]
    assert_equal_jitter(sleeps)


def test_refused_connection_is_retried_then_fails_without_a_status(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    port = int(fake.url.rsplit(":", 1)[1])
    fake.stop()
    client = TriggerDevClient(
        SECRET, f"http://127.0.0.1:{port}", max_attempts=3, sleep=sleeps.append
    )
    with client, pytest.raises(TriggerDevError) as info:
        client.list_schedules()
    assert info.value.status is None
    assert "gave up after 3 attempts" in info.value.message
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("status", "method"),
    [(400, "create"), (401, "create"), (403, "create"), (404, "update"), (422, "create")],
)
def test_other_client_errors_are_not_retried(
    client: TriggerDevClient, fake: FakeTriggerDev, sleeps: List[float], status: int, method: str
) -> None:
    fake.fail_next(status, body={"error": f"nope {status}"})

    with pytest.raises(TriggerDevError) as info:
        if method == "create":
            client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)
        else:
            client.update_schedule(KEY, TASK, "0 9 * * *")

    assert (info.value.status, info.value.message) == (status, f"nope {status}")
    assert len(fake.requests) == 1 and sleeps == []


def test_a_wrong_api_key_gets_401_once(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev
) -> None:
    client = make_client(api_key="tr_prod_wrong")
    with pytest.raises(TriggerDevError) as info:
        client.list_schedules()
    assert info.value.status == 401
    assert info.value.message == "Invalid or Missing API Key"
    assert len(fake.requests) == 1


def test_server_validation_errors_are_422_and_not_retried(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    for cron, tz in [("*/30 * * * * *", None), ("@daily", None), ("0 9 * * *", "Mars/Olympus")]:
        with pytest.raises(TriggerDevError) as info:
            client.create_schedule(TASK, cron, deduplication_key=KEY, timezone=tz)
        assert info.value.status == 422
    assert len(fake.requests) == 3 and fake.schedules == []


def test_plan_limit_rejects_post_even_for_an_existing_key_but_put_by_key_works(
    client: TriggerDevClient, fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    fake.schedule_limit = 2
    client.create_schedule(TASK, "0 9 * * *", deduplication_key="a")
    client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)

    for key in ("new", KEY):
        with pytest.raises(TriggerDevError) as info:
            client.create_schedule(TASK, "0 10 * * *", deduplication_key=key)
        assert info.value.status == 422 and "2/2 schedules" in info.value.message

    updated = client.update_schedule(KEY, TASK, "0 10 * * *")
    assert updated["generator"]["expression"] == "0 10 * * *"
    assert len(fake.schedules) == 2 and sleeps == []


def test_attempts_are_bounded_and_backoff_is_capped(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    client = make_client(max_attempts=7, backoff_base=0.5, backoff_max=4.0)
    fake.fail_next(502, count=20, body=b"<html><body>\n  502 Bad Gateway\n</body></html>")

    with pytest.raises(TriggerDevError) as info:
        client.list_schedules()

    assert len(fake.requests) == 7 and len(sleeps) == 6
    assert_equal_jitter(sleeps, base=0.5, cap=4.0)
    assert max(sleeps) <= 4.0
    assert info.value.status == 502
    assert info.value.message.startswith("<html><body> 502 Bad Gateway </body></html>")
    assert "gave up after 7 attempts" in info.value.message


def test_default_is_five_attempts(
    client: TriggerDevClient, fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    fake.fail_next(503, count=10)
    with pytest.raises(TriggerDevError):
        client.retrieve_schedule(KEY)
    assert len(fake.requests) == 5
    assert_equal_jitter(sleeps)


# -- rate limits --------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("in_body", "in_header"), [(True, True), (True, False), (False, True)])
def test_429_waits_until_reset_and_not_longer(
    make_client: Callable[..., TriggerDevClient],
    fake: FakeTriggerDev,
    sleeps: List[float],
    in_body: bool,
    in_header: bool,
) -> None:
    client = make_client(clock=lambda: NOW)
    fake.rate_limit_next(reset_at_ms=int(NOW * 1000) + 2_500, in_body=in_body, in_header=in_header)

    client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)

    (wait,) = sleeps
    assert 2.5 <= wait <= 2.5 + 0.1
    assert [r.status for r in fake.requests] == [429, 200]


def test_429_with_a_reset_in_the_past_retries_almost_at_once(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    client = make_client(clock=lambda: NOW)
    fake.rate_limit_next(reset_at_ms=int(NOW * 1000) - 5_000)

    client.list_schedules()

    (wait,) = sleeps
    assert 0 <= wait <= 0.1


def test_429_without_a_reset_falls_back_to_backoff(
    client: TriggerDevClient, fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    fake.fail_next(429, count=2, body={"error": "Too many requests"})

    client.list_schedules()

    assert_equal_jitter(sleeps)


def test_429_counts_towards_the_attempt_limit(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    client = make_client(clock=lambda: NOW, max_attempts=3)
    fake.rate_limit_next(count=5, reset_at_ms=int(NOW * 1000) + 1_000)

    with pytest.raises(TriggerDevError) as info:
        client.list_schedules()

    assert info.value.status == 429 and info.value.message.startswith("Rate limit exceeded")
    assert len(fake.requests) == 3 and len(sleeps) == 2


def test_429_real_time_wait_ends_between_reset_and_half_a_second_later(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev
) -> None:
    client = make_client(sleep=time.sleep)
    reset_ms = int((time.time() + 0.3) * 1000)
    fake.rate_limit_next(reset_at_ms=reset_ms)

    start = time.monotonic()
    client.list_schedules()
    elapsed = time.monotonic() - start

    limited, retried = fake.requests
    assert limited.status == 429 and retried.status == 200
    assert reset_ms / 1000 <= retried.received_at <= reset_ms / 1000 + 0.5
    assert 0.2 <= elapsed <= 0.8


# -- timeouts -----------------------------------------------------------------------


def test_a_hang_past_the_read_timeout_is_retried_then_raised_without_status(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    client = make_client(read_timeout=0.3, max_attempts=2)
    fake.hang_next(5.0, count=2)

    start = time.monotonic()
    with pytest.raises(TriggerDevError) as info:
        client.retrieve_schedule(KEY)
    elapsed = time.monotonic() - start

    assert info.value.status is None
    assert info.value.message.startswith("ReadTimeout")
    assert info.value.path == f"/api/v1/schedules/{ENCODED_KEY}"
    assert len(fake.requests) == 2 and len(sleeps) == 1
    assert 0.55 <= elapsed < 2.0


def test_a_hang_shorter_than_the_read_timeout_is_just_slow(
    make_client: Callable[..., TriggerDevClient], fake: FakeTriggerDev, sleeps: List[float]
) -> None:
    client = make_client(read_timeout=2.0)
    fake.hang_next(0.1)

    assert client.list_schedules() == []
    assert len(fake.requests) == 1 and sleeps == []


def test_every_request_passes_connect_and_read_timeouts(fake: FakeTriggerDev) -> None:
    seen: List[Any] = []

    class SpySession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
            seen.append(kwargs.get("timeout"))
            return super().request(*args, **kwargs)

    with SpySession() as session:
        client = TriggerDevClient(
            SECRET, fake.url, session=session, connect_timeout=1.5, read_timeout=7.0
        )
        client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)
        client.retrieve_schedule(KEY)
        client.list_schedules()
        client.trigger_task(TASK, {})
        client.close()
    assert seen == [(1.5, 7.0)] * 4


# -- secrecy ------------------------------------------------------------------------


def test_the_api_key_never_leaks(
    make_client: Callable[..., TriggerDevClient],
    fake: FakeTriggerDev,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3's connection logs included
    client = make_client(max_attempts=2, read_timeout=0.3)
    texts = [repr(client), str(client)]

    fake.fail_next(500, count=2)
    fake.drop_next(count=2)
    fake.hang_next(5.0, count=2)
    for _ in range(3):
        with pytest.raises(TriggerDevError) as info:
            client.create_schedule(TASK, "0 9 * * *", deduplication_key=KEY)
        texts += [str(info.value), repr(info.value), info.value.message]
    fake.fail_next(400, body={"error": f"bad key {SECRET}"})  # a server that echoes it
    with pytest.raises(TriggerDevError) as info:
        client.list_schedules()
    texts += [str(info.value), repr(info.value)]

    assert "api_key='***'" in texts[0]
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text
    for text in texts:
        assert SECRET not in text
    # On the wire, the key is in the Authorization header and nowhere else.
    for request in fake.requests:
        assert SECRET not in request.raw_path and SECRET.encode() not in request.body
        for name, value in request.headers:
            assert SECRET not in value or (name.lower(), value) == (
                "authorization",
                f"Bearer {SECRET}",
            )
        assert request.header("Authorization") == f"Bearer {SECRET}"


def test_a_key_that_would_break_the_header_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as info:
        TriggerDevClient(SECRET + "\n", "https://api.trigger.dev")
    assert SECRET not in str(info.value)


def test_retries_are_logged_at_warning_with_the_path(
    client: TriggerDevClient, fake: FakeTriggerDev, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next(503)
    with caplog.at_level(logging.WARNING, logger="bgjobs.triggerdev_client"):
        client.retrieve_schedule(KEY)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "HTTP 503" in record.getMessage() and ENCODED_KEY in record.getMessage()


# -- lifecycle and argument checks ---------------------------------------------------


def test_close_and_context_manager(fake: FakeTriggerDev) -> None:
    with TriggerDevClient(SECRET, fake.url) as client:
        assert client.list_schedules() == []
    with pytest.raises(RuntimeError, match="closed"):
        client.list_schedules()
    client.close()  # idempotent


def test_a_session_passed_in_is_not_closed(fake: FakeTriggerDev) -> None:
    with requests.Session() as session:
        TriggerDevClient(SECRET, fake.url, session=session).close()
        assert session.get(fake.url + "/api/v1/timezones", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_key": ""},
        {"api_url": "ftp://api.trigger.dev"},
        {"max_attempts": 0},
        {"read_timeout": 0},
        {"connect_timeout": float("nan")},
    ],
)
def test_bad_arguments_fail_fast(kwargs: Any) -> None:
    args = {"api_key": SECRET, "api_url": "https://api.trigger.dev", **kwargs}
    with pytest.raises(ValueError):
        TriggerDevClient(args.pop("api_key"), args.pop("api_url"), **args)


def test_a_payload_that_is_not_json_fails_before_any_request(
    client: TriggerDevClient, fake: FakeTriggerDev
) -> None:
    with pytest.raises(TypeError):
        client.trigger_task(TASK, {"when": object()})
    assert fake.requests == []


@pytest.mark.parametrize("json_body", [True, False], ids=["json-error", "text-body"])
def test_a_key_straddling_the_message_cut_is_masked_whole(
    client: TriggerDevClient, fake: FakeTriggerDev, json_body: bool
) -> None:
    # The server's message is cut to 200 characters; a key that starts 10 characters
    # before the cut must not survive as its first 10 characters.
    text = "x" * 190 + " " + SECRET + " tail"
    body: Any = {"error": text} if json_body else text.encode()
    fake.fail_next(400, body=body)
    with pytest.raises(TriggerDevError) as info:
        client.retrieve_schedule(KEY)
    for shown in (str(info.value), info.value.message, repr(info.value)):
        assert SECRET[:8] not in shown, shown
    assert "***" in info.value.message
