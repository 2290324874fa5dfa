"""Fixtures shared by every test module. Topic-specific helpers live in tests/support_*.py."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Iterator, List

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so tests can import support_* and fakes

from bgjobs.local import LocalJobManager


@pytest.fixture
def manager() -> Iterator[LocalJobManager]:
    """A fresh local manager (empty environment) that is stopped after the test."""
    m = LocalJobManager(env={})
    try:
        yield m
    finally:
        m.stop_all_jobs(wait=True, timeout=5)


@pytest.fixture(autouse=True)
def _private_state_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test gets its own default state directories (``$XDG_STATE_HOME/bgjobs/...``),
    inherited by the processes it starts: no test ever sees another test's state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))


@pytest.fixture(autouse=True)
def _reset_singleton() -> Iterator[None]:
    yield
    from bgjobs.factory import reset_job_manager

    reset_job_manager()


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[BaseException]]:
    """Fail the test if any thread (a timer, a worker) dies with an exception."""
    errors: List[BaseException] = []
    original = threading.excepthook

    def hook(args: Any) -> None:
        errors.append(args.exc_value)
        original(args)

    monkeypatch.setattr(threading, "excepthook", hook)
    yield errors
    assert errors == [], f"exceptions escaped in threads: {errors!r}"


@pytest.fixture(scope="session")
def spec() -> Any:
    """The Trigger.dev OpenAPI file (``spec/``), loaded once, for request/response checks."""
    from openapi import load_openapi

    loaded = load_openapi()
    if loaded is None:
        pytest.skip("trigger-dev-openapi.yaml not found (set BGJOBS_TEST_OPENAPI)")
    return loaded
