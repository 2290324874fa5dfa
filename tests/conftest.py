"""Fixtures shared by every test module. Topic-specific helpers live in tests/support_*.py."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Iterator, List

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so tests can import support_* and fakes

from support_clock import ManualClock

from bgjobs.local import LocalJobManager


def _bgjobs_plugin_installed() -> bool:
    """Whether the installed bgjobs declares its pytest11 entry point (pytest loaded it)."""
    from importlib.metadata import entry_points

    found = entry_points()
    group = (
        found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", [])  # type: ignore[attr-defined]  # Python 3.9
    )
    return any(ep.value == "bgjobs.pytest_plugin" for ep in group)


# pytester: tests/test_suite_guards.py runs the fixtures below in a sandbox. bgjobs' own
# plugin (bgjobs_manager, bgjobs_clock) comes through its entry point; an install older than
# the entry point gets it here, so the suite runs either way.
pytest_plugins = ["pytester"] + ([] if _bgjobs_plugin_installed() else ["bgjobs.pytest_plugin"])


@pytest.fixture
def manager() -> Iterator[LocalJobManager]:
    """A fresh local manager (empty environment) that is stopped after the test."""
    m = LocalJobManager(env={})
    try:
        yield m
    finally:
        m.stop_all_jobs(wait=True, timeout=5)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only in ``clock.advance()``: timers on it never wait real seconds."""
    return ManualClock()


@pytest.fixture
def manual_manager(clock: ManualClock) -> Iterator[LocalJobManager]:
    """A local manager on ``clock`` with one worker, so fires run one at a time in due
    order and ``support_clock.caught_up(manager._timers, clock)`` works; stopped after."""
    m = LocalJobManager(clock=clock, env={}, max_workers=1)
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


class _Records(logging.Handler):
    """Keeps every record it is handed (at ``level`` and above)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _fail_on_critical_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if anything under the ``bgjobs`` logger logs at CRITICAL.

    bgjobs logs CRITICAL only where it catches its own bug so that a thread survives (a
    timer callback, an election round, the Trigger.dev registration thread); such an
    exception never reaches ``threading.excepthook``, so ``thread_errors`` cannot see it.
    A test that provokes one on purpose says so with ``@pytest.mark.allow_critical``.
    """
    if request.node.get_closest_marker("allow_critical") is not None:
        yield
        return
    handler = _Records(logging.CRITICAL)
    logger = logging.getLogger("bgjobs")
    logger.addHandler(handler)
    try:
        yield  # torn down after the test's other fixtures (a manager's stop) have run
    finally:
        logger.removeHandler(handler)
    if handler.records:
        listed = "\n".join(_describe(record) for record in handler.records)
        pytest.fail(f"bgjobs logged at CRITICAL (a bug it caught in a thread):\n{listed}")


def _describe(record: logging.LogRecord) -> str:
    line = f"  {record.name}: {record.getMessage()}"
    if record.exc_info and record.exc_info[1] is not None:
        line += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
    return line


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
