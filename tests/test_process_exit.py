"""The interpreter exits promptly while jobs are scheduled (timer threads are daemons)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow

LIMIT = 1.0
"""Seconds a process may take to exit after its main code ended."""

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from bgjobs import LocalJobManager

    manager = LocalJobManager(env={})
    runs = []
    manager.schedule_job("every-1s", "Every second", lambda: runs.append(1), 1)
    manager.schedule_job("every-5s", "Every 5 s", lambda: None, 5)
    manager.schedule_job("every-10s", "Every 10 s", lambda: None, 10.0)
    manager.schedule_job("every-30s", "Every 30 s", lambda: None, 30)
    manager.schedule_job("every-60s", "Every minute", lambda: None, 60)
    manager.schedule_cron_job("nightly", "Nightly", lambda: None, "0 3 * * *",
                              timezone="Europe/Paris")
    # EXTRA
    assert len(manager.get_all_job_statuses()) >= 6
    print(repr(time.time()), flush=True)  # the end of the main code
    """
)


def run_until_exit(extra: str = "") -> float:
    """Run the script; return the seconds from the end of its main code to its exit.

    The machine's load only ever adds to the measurement, so it is taken up to three
    times and the best one counts; a process kept alive by the library fails them all.
    """
    best = float("inf")
    for _ in range(3):
        best = min(best, _measure_exit(extra))
        if best < LIMIT:
            break
    return best


def _measure_exit(extra: str) -> float:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.replace("# EXTRA", extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return float("inf")
        exited = time.time()
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert stderr == "", stderr  # nothing dies noisily at interpreter shutdown
    return exited - float(line)


def test_process_exits_within_a_second_while_jobs_are_scheduled() -> None:
    elapsed = run_until_exit()
    print(f"\nexit {elapsed * 1000:.1f} ms after the main code ended")
    assert elapsed < LIMIT, f"exit took {elapsed:.3f}s after the main code ended"


def test_process_exits_promptly_while_a_fast_job_keeps_ticking() -> None:
    elapsed = run_until_exit(
        'manager.schedule_job("fast", "Fast", lambda: sys.stdout.write(""), 0.01)\ntime.sleep(0.1)'
    )
    print(f"\nexit {elapsed * 1000:.1f} ms after the main code ended (fast job ticking)")
    assert elapsed < LIMIT, f"exit took {elapsed:.3f}s after the main code ended"
