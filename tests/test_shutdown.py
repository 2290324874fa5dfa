"""Graceful exit: scheduling stops at interpreter exit, running jobs get
BGJOBS_SHUTDOWN_TIMEOUT seconds to finish, and an idle schedule never delays exit.

Real processes: a plain script whose SIGTERM handler calls ``sys.exit`` (the pattern the
CLI uses), and gunicorn, whose workers exit through normal interpreter shutdown on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest
from support_clock import ManualClock, caught_up
from support_mp import child_env, gunicorn, python_script, read_line, read_lines, wait_for

from bgjobs.local import LocalJobManager

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX signals")


def _status(manager: LocalJobManager, job_id: str) -> Any:
    status = manager.get_job_status(job_id)
    assert status is not None
    return status


def _wait_exit(proc: subprocess.Popen[str], timeout: float) -> float:
    """Seconds until ``proc`` exits (fails the test after ``timeout``)."""
    started = time.monotonic()
    proc.wait(timeout=timeout)
    return time.monotonic() - started


# -- plain script -----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_lets_the_running_job_finish_before_exit(tmp_path: Path) -> None:
    out = tmp_path / "events.txt"
    env = child_env(JOB_SECONDS="0.5")
    with python_script("sigterm_script.py", str(out), "busy", env=env) as proc:
        assert read_line(proc, 20) == "ready"
        assert wait_for(lambda: any(line.event == "start" for line in read_lines(out)), 10)
        proc.send_signal(signal.SIGTERM)
        took = _wait_exit(proc, 15)
        assert proc.returncode == 0
    events = [line.event for line in read_lines(out)]
    assert events == ["start", "sigterm", "end"], "one run, finished after SIGTERM"
    assert took < 0.5 + 2.0  # the rest of the run, not the 10 s timeout


@pytest.mark.slow
def test_a_job_over_the_shutdown_timeout_is_logged_by_name(tmp_path: Path) -> None:
    out, log = tmp_path / "events.txt", tmp_path / "stderr.txt"
    env = child_env(JOB_SECONDS="30", BGJOBS_SHUTDOWN_TIMEOUT="0.5")
    with python_script("sigterm_script.py", str(out), "busy", env=env, log=log) as proc:
        assert read_line(proc, 20) == "ready"
        assert wait_for(lambda: any(line.event == "start" for line in read_lines(out)), 10)
        proc.send_signal(signal.SIGTERM)
        took = _wait_exit(proc, 15)
    assert 0.4 <= took < 0.5 + 2.0
    assert [line.event for line in read_lines(out)] == ["start", "sigterm"]
    text = log.read_text()
    assert "job 'slow-report' (Slow report) is still running after the 0.5s shutdown" in text


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "end-of-script"])
def test_an_idle_schedule_exits_promptly(tmp_path: Path, how: str) -> None:
    mode = "idle" if how == "sigterm" else "return"
    with python_script("sigterm_script.py", str(tmp_path / "out.txt"), mode) as proc:
        assert read_line(proc, 20) == "ready"
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        took = _wait_exit(proc, 10)
        assert proc.returncode == 0
    assert took < 1.0  # typically ~0.02 s: exit never waits for an idle timer


# -- gunicorn ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_gunicorn_sigterm_lets_the_running_job_finish(tmp_path: Path) -> None:
    out = tmp_path / "events.txt"
    env = {
        "TICKER_FILE": str(out),
        "TICKER_INTERVAL": "0.3",
        "TICKER_SLEEP": "1.0",
        "BGJOBS_LOCK_DIR": str(tmp_path / "locks"),
    }
    with gunicorn(tmp_path, "ticker:app", env=env, workers=2) as server:
        assert wait_for(lambda: any(line.event == "start" for line in read_lines(out)), 20)
        sent = time.time()
        server.proc.send_signal(signal.SIGTERM)  # the arbiter passes it to its workers
        server.proc.wait(timeout=20)
        took = time.time() - sent
        log = server.log_text()
    lines = read_lines(out)
    starts = [line for line in lines if line.event == "start"]
    ends = [line for line in lines if line.event == "end"]
    assert len(starts) == len(ends) == 1, lines  # one runner; its run was not cut short
    assert starts[0].pid == ends[0].pid and ends[0].time > sent
    assert ends[0].time - starts[0].time >= 1.0
    assert took < 1.0 + 4.0, log  # not gunicorn's 20 s graceful timeout


# -- LocalJobManager.shutdown -----------------------------------------------------------------


def test_shutdown_stops_scheduling_and_waits_for_the_running_job(clock: ManualClock) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    results: List[bool] = []

    def job() -> None:
        started.set()
        release.wait(10)
        finished.set()

    manager.schedule_job("job", "Job", job, 0.25)
    clock.advance(0.25)
    assert started.wait(5)
    stopper = threading.Thread(target=lambda: results.append(manager.shutdown(timeout=5)))
    stopper.start()
    try:
        assert wait_for(lambda: _status(manager, "job").status == "stopped", 5)
        stopper.join(0.1)
        assert stopper.is_alive()  # stopping is done; shutdown waits for the run
    finally:
        release.set()
        stopper.join(5)
    assert results == [True] and finished.is_set()
    status = manager.get_job_status("job")
    assert status is not None and status.status == "stopped" and status.next_run is None
    for _ in range(3):  # due times pass: nothing runs
        clock.advance(0.25)
        caught_up(manager._timers, clock)
    assert _status(manager, "job").runs == 1


def test_shutdown_timeout_names_the_jobs_still_running(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LocalJobManager(clock=clock, env={})
    started, release = threading.Event(), threading.Event()

    def stuck() -> None:
        started.set()
        release.wait(10)

    manager.schedule_job("stuck", "Stuck job", stuck, 0.25)
    try:
        clock.advance(0.25)
        assert started.wait(5)
        with caplog.at_level(logging.WARNING, logger="bgjobs"):
            began = time.monotonic()
            assert manager.shutdown(timeout=0.2) is False  # real seconds
            assert time.monotonic() - began < 2.0
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("'stuck' (Stuck job) is still running" in m for m in messages), messages
    finally:
        release.set()
    assert manager.wait_idle(5)


def test_after_shutdown_scheduling_fails_but_trigger_job_works() -> None:
    manager = LocalJobManager(env={})
    ran: List[int] = []
    manager.schedule_job("job", "Job", lambda: ran.append(1), 3600)
    assert manager.shutdown() is True
    with pytest.raises(RuntimeError, match=r"'again'.*shut down"):
        manager.schedule_job("again", "Again", lambda: None, 1)
    with pytest.raises(RuntimeError, match="shut down"):
        manager.schedule_cron_job("job", "Job", lambda: None, "* * * * *")
    assert manager.trigger_job("job") is True and ran == [1]
    assert manager.shutdown() is True  # idempotent


def test_shutdown_timeout_comes_from_the_environment(clock: ManualClock) -> None:
    manager = LocalJobManager(clock=clock, env={"BGJOBS_SHUTDOWN_TIMEOUT": "0.1"})
    release = threading.Event()
    manager.schedule_job("stuck", "Stuck", lambda: release.wait(10), 0.25)
    try:
        clock.advance(0.25)
        assert wait_for(lambda: manager.running_job_ids() == ["stuck"], 5)
        began = time.monotonic()
        assert manager.shutdown() is False
        assert time.monotonic() - began < 1.5
    finally:
        release.set()
    assert manager.wait_idle(5)


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_shutdown_timeout_is_a_clear_error(value: str) -> None:
    with pytest.raises(ValueError, match=f"BGJOBS_SHUTDOWN_TIMEOUT.*{value}"):
        LocalJobManager(env={"BGJOBS_SHUTDOWN_TIMEOUT": value})


def test_shutdown_from_inside_a_job_does_not_wait_for_itself(clock: ManualClock) -> None:
    manager = LocalJobManager(clock=clock, env={})
    results: List[bool] = []
    done = threading.Event()
    manager.schedule_job(
        "self", "Self", lambda: (results.append(manager.shutdown(timeout=5)), done.set()), 0.25
    )
    clock.advance(0.25)
    assert done.wait(5)
    assert results == [True]
