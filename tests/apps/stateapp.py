"""A WSGI app wired as the README's HTTP section shows, with no bgjobs configuration at all:
``initialize_background_jobs(jobs)`` picks the default state directory.

Jobs (lines go to files in $STATEAPP_DIR, each ``<pid> <time> [event]``, one ``O_APPEND``
write each):

* ``ticker`` every $STATEAPP_TICK seconds (default 0.5): appends to ``ticks.txt``.
* ``always-fails`` (hourly; dispatched by the tests): raises an error naming the run.
* ``keyed`` (hourly): sleeps 0.5 s, then appends to ``keyed.txt``.
* ``slow`` (hourly): sleeps $STATEAPP_SLOW seconds (default 5), then appends to ``slow.txt``.

Every answer carries ``X-Worker-Pid``, the pid of the gunicorn worker that answered.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Callable, Iterable, List, Tuple

from bgjobs import JobRegistry, get_job_manager, initialize_background_jobs
from bgjobs.wsgi import create_app

OUT = os.environ["STATEAPP_DIR"]
TICK = float(os.environ.get("STATEAPP_TICK", "0.5"))
SLOW = float(os.environ.get("STATEAPP_SLOW", "5"))

jobs = JobRegistry()


def _append(name: str, *fields: str) -> None:
    line = " ".join((str(os.getpid()), f"{time.time():.6f}", *fields)) + "\n"
    fd = os.open(os.path.join(OUT, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


@jobs.interval("ticker", "Ticker", seconds=TICK)
def ticker() -> None:
    _append("ticks.txt", "tick")


@jobs.interval("always-fails", "Always fails", hours=1)
def always_fails() -> None:
    raise RuntimeError(f"failure {uuid.uuid4().hex} in pid {os.getpid()}")


@jobs.interval("keyed", "Keyed", hours=1)
def keyed() -> None:
    time.sleep(0.5)
    _append("keyed.txt", "keyed")


@jobs.interval("slow", "Slow", hours=1)
def slow() -> None:
    time.sleep(SLOW)
    _append("slow.txt", "slow")


initialize_background_jobs(jobs)
endpoints = create_app(get_job_manager())


def app(
    environ: Any, start_response: Callable[[str, List[Tuple[str, str]], Any], Any]
) -> Iterable[bytes]:
    def start(status: str, headers: List[Tuple[str, str]], *exc_info: Any) -> Any:
        return start_response(status, [*headers, ("X-Worker-Pid", str(os.getpid()))], *exc_info)

    return endpoints(environ, start)
