"""bgjobs in twenty seconds: four jobs that show what the scheduler does.

Run it from the repository (after ``pip install -e .``, or straight from a checkout)::

    python examples/quickstart.py              # 20 seconds, then the metrics
    python examples/quickstart.py 60           # a minute
    bgjobs run examples/quickstart.py          # until Ctrl-C
    bgjobs list examples/quickstart.py         # the schedules and their next fire times

What to watch in the table:

``heartbeat``
    An interval job: every 2 s, on the fixed grid start + k x 2 s, so it never drifts.
``every-5s``
    A cron with a seconds field (6 fields, seconds first): it fires when the wall clock
    reads :00, :05, :10 ... whenever the script was started.
``flaky``
    Fails on every third run. The failure is logged, counted in FAILS, and the schedule
    simply carries on.
``slow``
    Due every second but takes 3 s. bgjobs never runs a job twice at once, so the ticks
    that find it still running are skipped and counted in SKIPS, never queued.

Ctrl-C (or SIGTERM) stops scheduling, waits for a run in progress (``slow``'s, most
likely) and prints the metrics.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

try:
    import bgjobs  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bgjobs import JobRegistry

jobs = JobRegistry()


@jobs.interval("heartbeat", "Heartbeat", seconds=2)
def heartbeat() -> None:
    """Nothing to do but be on time."""


@jobs.cron("every-5s", "Every five seconds (cron)", "*/5 * * * * *")
def every_five_seconds() -> None:
    """Fires at :00, :05, :10 ... of every minute, UTC."""


_flaky_runs = itertools.count(1)  # a job never overlaps itself, so no lock is needed


@jobs.interval("flaky", "Fails every third run", seconds=1.5)
def flaky() -> None:
    run = next(_flaky_runs)
    if run % 3 == 0:
        raise RuntimeError(f"run {run} failed on purpose (flaky fails every third run)")


@jobs.interval("slow", "Takes 3 s, due every second", seconds=1)
def slow() -> None:
    time.sleep(3)


if __name__ == "__main__":
    from bgjobs.cli import main

    duration = sys.argv[1] if len(sys.argv) > 1 else "20"
    raise SystemExit(main(["run", __file__, "--duration", duration]))
