"""Helpers for the HTTP tests: a job that blocks on an event, a real server."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

# Generous: only reached when a test is broken, never in a passing run.
WAIT = 10.0


def web_client(manager: Any, secret: str, **kwargs: Any) -> Any:
    """A werkzeug test client for ``create_app(manager)`` guarded by ``secret`` (no env)."""
    from werkzeug.test import Client

    from bgjobs.wsgi import create_app

    kwargs.setdefault("secret", secret)
    kwargs.setdefault("env", {})
    return Client(create_app(manager, **kwargs))


def body(response: Any) -> Any:
    """A JSON answer's body, after checking it says it is JSON."""
    import json

    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(response.get_data(as_text=True))


def bearer(secret: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


class BlockingJob:
    """A job that signals ``started`` and then waits until ``release`` is set."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.started.set()
        if not self.release.wait(WAIT):
            raise AssertionError("BlockingJob was never released")


class Recorder:
    """A job that records a value computed inside the run, and signals each run."""

    def __init__(self, probe: Callable[[], Any] = lambda: None) -> None:
        self.probe = probe
        self.values: List[Any] = []
        self.ran = threading.Event()

    def __call__(self) -> None:
        self.values.append(self.probe())
        self.ran.set()


def in_thread(func: Callable[[], Any]) -> ThreadResult:
    result = ThreadResult()

    def run() -> None:
        try:
            result.value = func()
        except BaseException as exc:  # handed to the test thread
            result.error = exc

    result.thread = threading.Thread(target=run, daemon=True)
    result.thread.start()
    return result


class ThreadResult:
    def __init__(self) -> None:
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None

    def get(self) -> Any:
        assert self.thread is not None
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "request thread did not finish"
        if self.error is not None:
            raise self.error
        return self.value


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve a WSGI app on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.01},  # shutdown() waits up to this long (default 0.5 s)
        name="test-http",
        daemon=True,
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
