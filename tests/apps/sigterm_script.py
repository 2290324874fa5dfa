"""A plain script: a LocalJobManager, and a SIGTERM handler that exits through sys.exit.

    python sigterm_script.py OUT idle|busy|return

``idle``: a job due in an hour; ``busy``: a job every 0.1 s that writes ``start``, sleeps
$JOB_SECONDS and writes ``end`` to OUT; ``return``: schedule an hourly job and fall off the
end of the script. Prints ``ready`` once scheduled.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from bgjobs.local import LocalJobManager

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")

out, mode = sys.argv[1], sys.argv[2]
job_seconds = float(os.environ.get("JOB_SECONDS", "1.0"))


def _append(event: str) -> None:
    with open(out, "a") as f:
        f.write(f"{os.getpid()} {time.time():.6f} {event}\n")


def slow_job() -> None:
    _append("start")
    time.sleep(job_seconds)
    _append("end")


def on_sigterm(signum: int, frame: Any) -> None:
    _append("sigterm")
    sys.exit(0)


signal.signal(signal.SIGTERM, on_sigterm)
manager = LocalJobManager()
if mode == "busy":
    manager.schedule_job("slow-report", "Slow report", slow_job, 0.1)
else:
    manager.schedule_job("hourly", "Hourly", lambda: None, 3600)
print("ready", flush=True)
if mode != "return":
    while True:
        time.sleep(0.05)
