"""Process A of a two-process test: runs job "report" until the file RELEASE exists.

    python holder.py LOCK_DIR MARKER RELEASE

Schedules "report" (hourly) with the lock directory, prints ``ready``, runs it once with
trigger_job: the run creates MARKER, waits for RELEASE (at most 20 s) and ends. Prints
``ran True|False`` and the job's status runner, then exits.
"""

from __future__ import annotations

import os
import sys
import time

from bgjobs.local import LocalJobManager

lock_dir, marker, release = sys.argv[1:4]


def report() -> None:
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 20
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)


manager = LocalJobManager(env={}, lock_dir=lock_dir)
manager.schedule_job("report", "Report", report, 3600)
print("ready", flush=True)
ran = manager.trigger_job("report")
status = manager.get_job_status("report")
print("ran", ran, flush=True)
print("runner", status.runner if status else None, flush=True)
