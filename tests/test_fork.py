"""os.fork(): the child never deadlocks on a lock held at fork time, re-arms its schedules,
and — with a lock directory — never repeats a fire the parent runs.

The forked children report back through a pipe (``support_mp.fork_and_report``) and leave
with ``os._exit``; one that hangs is killed and fails the test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from support_mp import fork_and_report, forked_event, read_lines, wait_for
from test_multiprocess import assert_each_fire_ran_once

import bgjobs._local.leadership as leadership
from bgjobs.local import LocalJobManager

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork"),
    # 3.12+ warns that fork() in a multi-threaded process may deadlock the child: that
    # risk is exactly what these tests show bgjobs handles.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

BEAT = 0.05


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_log() -> Iterator[ListHandler]:
    handler = ListHandler()
    logger = logging.getLogger("bgjobs")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _beat_writer(out: Path, manager_ref: List[LocalJobManager]) -> Any:
    def beat() -> None:
        status = manager_ref[0].get_job_status("beat")
        nxt = status.next_run.timestamp() if status and status.next_run else None
        line = f"{os.getpid()} {time.time():.6f} tick {nxt if nxt is not None else '-'}\n"
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    return beat


def _runs(manager: LocalJobManager, job_id: str) -> int:
    status = manager.get_job_status(job_id)
    assert status is not None
    return status.runs


def _child_checks(manager: LocalJobManager, trigger: str = "beat") -> Dict[str, Any]:
    """What a forked child reports: every public call works, and its schedule runs."""
    statuses = manager.get_all_job_statuses()
    manager.get_job_metrics()
    before = _runs(manager, "beat")
    scheduled = wait_for(lambda: _runs(manager, "beat") >= before + 3, 15)
    # A scheduled run may be going at this very moment (then trigger_job is False, as it
    # should be): what matters is that a manual run works in the child at all.
    triggered = wait_for(lambda: manager.trigger_job(trigger), 5)
    status = manager.get_job_status("beat")
    assert status is not None
    return {
        "jobs": [s.id for s in statuses],
        "scheduled_runs": scheduled,
        "triggered": triggered,
        "runner": status.runner,
    }


@pytest.mark.parametrize("use_lock_dir", [False, True], ids=["no-lock-dir", "lock-dir"])
def test_child_rebuilds_locks_that_another_thread_held_at_fork(
    tmp_path: Path, use_lock_dir: bool
) -> None:
    manager = LocalJobManager(env={}, lock_dir=tmp_path / "locks" if use_lock_dir else None)
    manager.schedule_job("beat", "Beat", lambda: None, BEAT)
    job = manager._job("beat")
    assert job is not None
    holding = threading.Event()

    locks: List[Any] = [
        manager._jobs_lock,
        job._lock,
        job.run_lock,
        manager._idle,
        manager._metrics._metrics_lock,
    ]
    if use_lock_dir:
        locks.append(manager._coordinator.leaderships["beat"].lock)

    def hold_every_lock(forked: threading.Event) -> None:
        # Every lock of the manager and its job, held across the fork below by a thread
        # the child will not have; released once the fork is done (the parent's own
        # hand-over needs them).
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            holding.set()
            forked.wait(30)

    with forked_event() as forked:
        holder = threading.Thread(target=hold_every_lock, args=(forked,), daemon=True)
        holder.start()
        try:
            assert holding.wait(5)
            report = fork_and_report(lambda: _child_checks(manager))
        finally:
            forked.set()
            holder.join(5)
            manager.shutdown(timeout=5)
    assert report["jobs"] == ["beat"]
    assert report["scheduled_runs"] and report["triggered"]
    if use_lock_dir:
        assert report["runner"].startswith("this process (pid ")


@pytest.mark.parametrize("use_lock_dir", [False, True], ids=["no-lock-dir", "lock-dir"])
def test_fork_from_inside_a_running_job(
    tmp_path: Path, use_lock_dir: bool, warnings_log: ListHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Election rounds 10 times a second instead of once (DEFER_SECONDS stays as it is):
    # the parent notices the child is gone sooner, and takes its schedule back as late.
    monkeypatch.setattr(leadership, "ELECTION_INTERVAL", 0.1)
    beats = tmp_path / "beats.txt"
    manager = LocalJobManager(env={}, lock_dir=tmp_path / "locks" if use_lock_dir else None)
    manager.schedule_job("beat", "Beat", _beat_writer(beats, [manager]), BEAT)
    manager.schedule_job("poke", "Poke", lambda: None, 3600)  # triggered by the child
    reports: List[Any] = []
    forked_at: List[float] = []

    def forker() -> None:
        if forked_at:
            return
        forked_at.append(time.time())

        def child() -> Dict[str, Any]:
            report = _child_checks(manager, trigger="poke")
            report["running_here"] = manager.running_job_ids()
            report["forker_busy"] = not manager.trigger_job("forker")
            report["warnings"] = [m for m in warnings_log.messages if "BGJOBS_LOCK_DIR" in m]
            return report

        reports.append(fork_and_report(child))  # in the job: blocks until the child is done

    try:
        assert wait_for(lambda: len(read_lines(beats)) >= 3, 10)
        manager.schedule_job("forker", "Forker", forker, BEAT)
        assert wait_for(lambda: bool(reports), 40)
        child_exited = time.time()
        report = reports[0]
        assert report["scheduled_runs"] and report["triggered"]
        # The run that forked goes on in the child, so that job is busy there.
        assert "forker" in report["running_here"] and report["forker_busy"]
        if not use_lock_dir:
            assert len(report["warnings"]) == 1, report["warnings"]
            assert "LocalJobManager(lock_dir=...)" in report["warnings"][0]
            return
        assert report["warnings"] == []
        assert report["runner"].startswith("this process (pid ")
        # The parent handed its schedules to the child, and takes them back once the
        # child is gone (after finding them unclaimed for DEFER_SECONDS).
        me = os.getpid()
        assert wait_for(
            lambda: any(line.pid == me and line.time > child_exited for line in read_lines(beats)),
            8,
        )
        lines = read_lines(beats)
        child_pids = {line.pid for line in lines} - {me}
        assert len(child_pids) == 1, "the child ran the schedule while it lived"
        assert_each_fire_ran_once(lines, BEAT)
    finally:
        manager.shutdown(timeout=5)


def test_fork_while_threads_hammer_the_manager() -> None:
    manager = LocalJobManager(env={})
    manager.schedule_job("beat", "Beat", lambda: None, BEAT)
    manager.schedule_job("other", "Other", lambda: time.sleep(0.001), 0.01)
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            manager.get_all_job_statuses()
            manager.get_job_metrics()
            manager.running_job_ids()
            manager.trigger_job("other")

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            report: Optional[Dict[str, Any]] = fork_and_report(lambda: _child_checks(manager))
            assert report is not None and report["scheduled_runs"] and report["triggered"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        manager.shutdown(timeout=5)


def test_every_runtime_rebuilds_its_locks_in_a_forked_child() -> None:
    """The execution core's own fork hook covers managers without timers (vercel) too."""
    from bgjobs.vercel import VercelJobManager

    manager = VercelJobManager(env={})
    manager.schedule_job("sync", "Sync", lambda: None, 300)
    job = manager._job("sync")
    assert job is not None
    holding = threading.Event()

    def hold(forked: threading.Event) -> None:
        metrics_lock = manager._metrics._metrics_lock
        with manager._jobs_lock, job._lock, job.run_lock, manager._idle, metrics_lock:
            holding.set()
            forked.wait(30)

    def in_child() -> Dict[str, Any]:
        ran = manager.trigger_job("sync")
        return {"ran": ran, "runs": manager.get_job_metrics().total_executions}

    with forked_event() as forked:
        holder = threading.Thread(target=hold, args=(forked,), daemon=True)
        holder.start()
        try:
            assert holding.wait(5)
            report = fork_and_report(in_child)
        finally:
            forked.set()
            holder.join(5)
    assert report == {"ran": True, "runs": 1}
