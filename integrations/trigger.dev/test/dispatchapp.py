"""The bgjobs app the task's Node tests dispatch to, served by gunicorn (test/dispatch.test.mjs).

A production app in the trigger-dev runtime, as the guide sets one up; its Trigger.dev API
URL points at a closed port, so the background registration fails (logged) and nothing
leaves the machine. Jobs append ``<job> <pid>`` to ``$DISPATCHAPP_DIR/runs.txt`` when they
start:

* ``ok``: returns at once.
* ``fails``: raises ``RuntimeError("disk full on /var/data")``.
* ``flaky``: fails on its first run, succeeds afterwards.
* ``slow``: sleeps ``$DISPATCHAPP_SLOW`` seconds (default 4; the tests use 6), longer than
  gunicorn's timeout.
* ``counted``: sleeps 1.5 s, to be dispatched twice at once.
* ``daily``: returns at once; its fires are dispatched with gaps (missed fires).
"""

from __future__ import annotations

import os
import time

from bgjobs import JobRegistry, initialize_background_jobs
from bgjobs.wsgi import create_app

OUT = os.environ["DISPATCHAPP_DIR"]
SLOW = float(os.environ.get("DISPATCHAPP_SLOW", "4"))

jobs = JobRegistry()


def _started(name: str) -> int:
    """Record a start; returns how many runs of ``name`` had started before."""
    path = os.path.join(OUT, "runs.txt")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{name} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    with open(path) as lines:
        return sum(1 for line in lines if line.split()[0] == name) - 1


@jobs.interval("ok", "OK", hours=1)
def ok() -> None:
    _started("ok")


@jobs.interval("fails", "Fails", hours=1)
def fails() -> None:
    _started("fails")
    raise RuntimeError("disk full on /var/data")


@jobs.interval("flaky", "Flaky", hours=1)
def flaky() -> None:
    if _started("flaky") == 0:
        raise RuntimeError("flaky: first run fails")


@jobs.interval("slow", "Slow", hours=1)
def slow() -> None:
    _started("slow")
    time.sleep(SLOW)


@jobs.interval("counted", "Counted", hours=1)
def counted() -> None:
    _started("counted")
    time.sleep(1.5)


@jobs.interval("daily", "Daily", hours=1)
def daily() -> None:
    _started("daily")


app = create_app(initialize_background_jobs(jobs))
