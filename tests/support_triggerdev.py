"""Helpers for tests of the trigger-dev runtime against the HTTP fake (fake_triggerdev.py)."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, Optional

from fake_triggerdev import FakeTriggerDev, RecordedRequest
from openapi import OpenAPI

from bgjobs.triggerdev import TriggerDevJobManager
from bgjobs.triggerdev_client import TriggerDevClient
from bgjobs.types import TriggerDevConfig

__all__ = [
    "SECRET",
    "TASK",
    "assert_requests_match_spec",
    "fast_client",
    "make_manager",
    "trigger_env",
    "wait_until",
]

SECRET = "tr_prod_M4nag3rK3y_never_in_logs_77"
TASK = "bgjobs-dispatch"


def fast_client(fake: FakeTriggerDev, **kwargs: Any) -> TriggerDevClient:
    """A client that gives up quickly: 2 attempts, 10 ms backoff, 0.3 s read timeout.

    ``api_key`` defaults to the fake's first key."""
    kwargs.setdefault("max_attempts", 2)
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("read_timeout", 0.3)
    kwargs.setdefault("connect_timeout", 0.5)
    api_key = kwargs.pop("api_key", fake.api_key)
    return TriggerDevClient(api_key, fake.url, **kwargs)


def make_manager(
    fake: FakeTriggerDev,
    *,
    environment: str = "",
    client: Optional[TriggerDevClient] = None,
    api_key: Optional[str] = None,
    branch: Optional[str] = None,
    **kwargs: Any,
) -> TriggerDevJobManager:
    """A manager for ``fake`` with a fast client and an empty environment; ``api_key``
    (default: the fake's first key) picks the Trigger.dev environment."""
    key = api_key or fake.api_key
    config = TriggerDevConfig(
        enabled=True, api_key=key, api_url=fake.url, environment=environment, branch=branch
    )
    # The registry stamp (a marker schedule and its requests) is off unless a test asks
    # for it: most tests count requests and schedules (test_triggerdev_stamp.py tests it).
    kwargs["env"] = {"TRIGGER_DEV_REGISTRY_STAMP": "0", **kwargs.get("env", {})}
    client = client or fast_client(fake, api_key=key, branch=branch)
    return TriggerDevJobManager(config, client=client, **kwargs)


def trigger_env(fake: FakeTriggerDev, **extra: str) -> Dict[str, str]:
    """The environment of a production app in trigger-dev mode, wired to ``fake``."""
    return {
        "TRIGGER_DEV_ENABLED": "1",
        "TRIGGER_DEV_API_KEY": fake.api_key,
        "TRIGGER_DEV_API_URL": fake.url,
        "BGJOBS_ENV": "production",
        "TRIGGER_DEV_ENVIRONMENT": "production",
        "TRIGGER_DEV_REGISTRY_STAMP": "0",  # see make_manager
        **extra,
    }


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 5 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.005)


def assert_requests_match_spec(spec: OpenAPI, requests: Iterable[RecordedRequest]) -> None:
    """Every request's query and JSON body are what the OpenAPI file documents."""
    for request in requests:
        spec.validate_query(request.method, request.path, request.query)
        if spec.has_request_body(request.method, request.path):
            assert request.header("Content-Type") == "application/json"
            spec.validate_request(request.method, request.path, request.json)
        else:
            assert request.body == b"", f"{request.method} {request.path} takes no body"
