"""A plain process with a LocalJobManager on a shared state directory.

    python state_proc.py serve STATE_DIR OUT INTERVAL SLEEP
    python state_proc.py race STATE_DIR OUT DUE

``serve``: schedules job ``slow`` every INTERVAL seconds; each run appends
``<pid> <time> start``, sleeps SLEEP seconds and appends ``<pid> <time> end`` to OUT.
Prints ``ready`` and runs until killed.

``race``: declares job ``race`` (hourly, never due during a test), prints ``ready``, waits
for a line on stdin, then calls ``manager.run_scheduled(job, DUE)`` for the fire due at
the Unix time DUE — every racer asks for the same fire — shuts the manager down (so its
written-behind records are on file) and prints ``ran True|False``.
A run appends ``<pid> <time> race`` to OUT.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from bgjobs.local import LocalJobManager
from bgjobs.schedules import utc_datetime

mode, state_dir, out = sys.argv[1:4]


def _append(event: str) -> None:
    line = f"{os.getpid()} {time.time():.6f} {event}\n"
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


manager = LocalJobManager(env={}, state_dir=state_dir)

if mode == "serve":
    interval, sleep = float(sys.argv[4]), float(sys.argv[5])

    def slow() -> None:
        _append("start")
        time.sleep(sleep)
        _append("end")

    manager.schedule_job("slow", "Slow", slow, interval)
    print("ready", flush=True)
    threading.Event().wait()
else:
    due = utc_datetime(float(sys.argv[4]))
    manager.schedule_job("race", "Race", lambda: _append("race"), 3600)
    job = manager._job("race")
    assert job is not None
    print("ready", flush=True)
    sys.stdin.readline()
    ran = manager.run_scheduled(job, due)
    # A scheduled run's records are written behind; the test kills this process as soon
    # as it answers, so the records reach the file first, as on any clean exit.
    manager.shutdown()
    print("ran", ran, flush=True)
