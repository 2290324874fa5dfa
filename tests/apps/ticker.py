"""A WSGI app whose manager appends ``<pid> <time> tick <next>`` to $TICKER_FILE every
$TICKER_INTERVAL seconds.

``<next>`` is the due time the run's tick armed next (``JobStatus.next_run``): every fire
arms a different one, so two lines with the same ``<next>`` would be one fire run twice.
With $TICKER_SLEEP > 0 each run instead writes ``<pid> <time> start``, sleeps that long and
writes ``<pid> <time> end``. The lock directory comes from $BGJOBS_LOCK_DIR (if set), like
an application that leaves the choice to its deployment. Served by gunicorn in the tests.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, List, Tuple

from bgjobs.local import LocalJobManager

OUT = os.environ["TICKER_FILE"]
INTERVAL = float(os.environ.get("TICKER_INTERVAL", "0.2"))
SLEEP = float(os.environ.get("TICKER_SLEEP", "0"))


def _append(*fields: str) -> None:
    line = " ".join((str(os.getpid()), f"{time.time():.6f}", *fields)) + "\n"
    fd = os.open(OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


def tick() -> None:
    if SLEEP <= 0:
        status = manager.get_job_status("ticker")
        nxt = status.next_run if status is not None else None
        _append("tick", f"{nxt.timestamp():.6f}" if nxt is not None else "-")
        return
    _append("start")
    time.sleep(SLEEP)
    _append("end")


manager = LocalJobManager()
manager.schedule_job("ticker", "Ticker", tick, INTERVAL)


def app(
    environ: Any, start_response: Callable[[str, List[Tuple[str, str]]], Any]
) -> Iterable[bytes]:
    body = {"pid": os.getpid(), "jobs": [s.to_dict() for s in manager.get_all_job_statuses()]}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
