"""A job that raises ``SystemExit`` (issue 11, faults 4 and 5): on a worker thread it is a
failed run logged by the job's name, and the process goes on; in a child the job forked,
``sys.exit()`` ends the child with its status, as it would on the main thread."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest
from support_clock import ManualClock

from bgjobs.local import LocalJobManager


def test_system_exit_in_a_scheduled_job_is_logged_naming_the_job(
    clock: ManualClock, manual_manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Not CRITICAL "bgjobs timer callback failed" (the conftest fails a test on CRITICAL)."""
    after = threading.Event()

    def quits() -> None:
        sys.exit(3)

    manual_manager.schedule_job("quitter", "Quitter", quits, 1)
    manual_manager.schedule_job("after", "After", after.set, 2)
    with caplog.at_level(logging.ERROR, logger="bgjobs"):
        clock.advance(1)
        clock.advance(1)
        assert after.wait(10)  # the single worker survived and ran the next fire
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        "job 'quitter' (Quitter) raised SystemExit(3)" in m and "process goes on" in m
        for m in errors
    ), errors
    status = manual_manager.get_job_status("quitter")
    assert status is not None
    assert (status.status, status.error) == ("failed", "SystemExit: 3")


def _wait_for_exit(pid: int, timeout: float) -> Optional[int]:
    """The child's exit status, or ``None`` if it is still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # on purpose, 3.12+
@pytest.mark.parametrize("started_by", ["schedule", "async-dispatch"])
def test_a_child_forked_by_a_job_ends_with_its_sys_exit_status(
    tmp_path: Path, started_by: str
) -> None:
    """On a pool worker (a scheduled run) and on a dispatch thread (HTTP respond-async)."""
    children: List[int] = []
    forked = threading.Event()
    marker = tmp_path / "child-exit-handlers-ran"

    def forks() -> None:
        if forked.is_set():
            return
        forked.set()
        pid = os.fork()
        if pid == 0:
            import atexit

            atexit.register(marker.write_text, "yes")  # exit handlers run, as for sys.exit
            sys.exit(7)
        children.append(pid)

    manager = LocalJobManager(env={})
    try:
        if started_by == "schedule":
            manager.schedule_job("forker", "Forker", forks, 0.05)
        else:
            manager.schedule_job("forker", "Forker", forks, 3600)
            assert manager.dispatch("forker", background=True).outcome == "accepted"
        assert forked.wait(10)
        deadline = time.monotonic() + 10
        while not children and time.monotonic() < deadline:
            time.sleep(0.01)
        assert children
        status = _wait_for_exit(children[0], 10)
        if status is None:  # the old behaviour: the child runs the parent's jobs for ever
            os.kill(children[0], signal.SIGKILL)
            os.waitpid(children[0], 0)
        assert status == 7
        assert marker.read_text() == "yes"
    finally:
        manager.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # on purpose, 3.12+
def test_a_forked_child_leaving_with_sys_exit_does_not_record_the_parents_run(
    tmp_path: Path,
) -> None:
    """The child continues the run on its copy of the thread, but the run is the parent's:
    only the parent says how it ended. Here the child leaves first, while the parent's
    run waits for it (the store keeps the first finish of a run)."""
    statuses: List[int] = []

    def forks() -> None:
        pid = os.fork()
        if pid == 0:
            sys.exit(7)
        statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

    with LocalJobManager(env={}, state_dir=tmp_path / "state") as manager:
        manager.schedule_job("forker", "Forker", forks, 3600)
        # Not trigger_job: on the test's own thread the child would be a copy of pytest.
        assert manager.dispatch("forker", background=True).outcome == "accepted"
        assert manager.wait_idle(10)
        assert statuses == [7]
    with LocalJobManager(env={}, state_dir=tmp_path / "state") as reader:
        reader.schedule_job("forker", "Forker", forks, 3600)
        runs = reader.get_job_runs("forker")
        status = reader.get_job_status("forker")
    assert [(r.outcome, r.error) for r in runs] == [("completed", None)]
    assert status is not None and (status.runs, status.failures) == (1, 0)
