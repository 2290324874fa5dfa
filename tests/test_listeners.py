"""``add_listener``: callbacks told about runs, off the timer thread; a listener that raises
never breaks a run. Log records carry ``job_id``, ``run_id`` and ``trigger``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, List, Tuple

import pytest
from support_clock import ManualClock

import bgjobs
from bgjobs import JobRun, LocalJobManager


@pytest.fixture(autouse=True)
def _fail_on_thread_errors(thread_errors: List[BaseException]) -> None:
    """Every test here fails if a thread dies with an exception."""


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


class Recorder:
    def __init__(self) -> None:
        self.seen: List[Tuple[str, JobRun, str]] = []  # (event, run, thread name)

    def __call__(self, run: JobRun, event: str) -> None:
        self.seen.append((event, run, threading.current_thread().name))

    def events(self) -> List[Tuple[str, str, str]]:
        return [(event, run.job_id, run.outcome) for event, run, _ in self.seen]


def boom() -> None:
    raise ValueError("boom")


def test_listeners_hear_of_runs_off_the_running_thread(manager: LocalJobManager) -> None:
    everything = Recorder()
    manager.add_listener(everything, events=bgjobs.listeners.EVENTS)
    manager.schedule_job("ok", "OK", lambda: None, 3600)
    manager.schedule_job("bad", "Bad", boom, 3600)
    manager.trigger_job("ok")
    manager.trigger_job("bad")
    assert manager.flush_listeners(5)
    assert everything.events() == [
        ("started", "ok", "running"),
        ("completed", "ok", "completed"),
        ("started", "bad", "running"),
        ("failed", "bad", "failed"),
    ]
    assert {name for _, _, name in everything.seen} == {"bgjobs-listeners"}
    failed_run = everything.seen[-1][1]
    assert failed_run.error == "ValueError: boom"
    assert failed_run == manager.get_job_runs("bad")[0]


def test_by_default_a_listener_hears_of_failures_only(manager: LocalJobManager) -> None:
    runs: List[JobRun] = []
    manager.add_listener(runs.append)  # a one-argument callback gets the run alone
    manager.schedule_job("ok", "OK", lambda: None, 3600)
    manager.schedule_job("bad", "Bad", boom, 3600)
    manager.trigger_job("ok")
    manager.trigger_job("bad")
    assert manager.flush_listeners(5)
    assert [(r.job_id, r.outcome) for r in runs] == [("bad", "failed")]


def test_a_listener_that_raises_is_logged_and_breaks_nothing(
    manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(run: JobRun) -> None:
        raise RuntimeError("listener bug")

    later: List[JobRun] = []
    manager.add_listener(broken, events=("completed",))
    manager.add_listener(later.append, events=("completed",))
    manager.schedule_job("ok", "OK", lambda: None, 3600)
    assert manager.trigger_job("ok") is True
    assert manager.trigger_job("ok") is True
    assert manager.flush_listeners(5)
    assert len(later) == 2
    status = manager.get_job_status("ok")
    assert status is not None and status.status == "completed" and status.runs == 2
    errors = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(errors) == 2 and all(r.levelno == logging.ERROR for r in errors)
    assert "'completed' of job 'ok'" in errors[0].getMessage()


def test_skipped_and_timed_out_events(clock: ManualClock) -> None:
    recorder = Recorder()
    release = threading.Event()
    with LocalJobManager(clock=clock, env={}) as manager:
        manager.add_listener(recorder, events=("skipped", "timed_out", "failed"))
        manager.schedule_job("hung", "Hung", lambda: release.wait(10), 3600, timeout=2)
        thread = threading.Thread(target=manager.trigger_job, args=("hung",), daemon=True)
        thread.start()
        assert wait_until(lambda: manager.running_job_ids() == ["hung"])
        assert manager.trigger_job("hung") is False
        clock.advance(2)
        assert wait_until(lambda: len(recorder.seen) == 2)
        release.set()
        thread.join(5)
        assert manager.flush_listeners(5)
    assert recorder.events() == [
        ("skipped", "hung", "skipped"),
        ("timed_out", "hung", "timed_out"),
        ("failed", "hung", "timed_out"),
    ]
    timed_out_run = recorder.seen[1][1]
    assert timed_out_run.finished is None  # told while it still runs
    assert recorder.seen[2][1].finished is not None


def test_abandoned_runs_are_told(tmp_path: Any) -> None:
    recorder = Recorder()
    with LocalJobManager(env={}, state_dir=str(tmp_path / "state")) as manager:
        manager.add_listener(recorder, events=("abandoned",))
        manager.schedule_job("j", "J", lambda: None, 3600)
        assert manager.store is not None
        dead = JobRun(
            "dead-run",
            "j",
            "schedule",
            bgjobs.schedules.utc_datetime(time.time()),
            pid=2**22 + 7,
            host=bgjobs.execution._host_name(),
        )
        manager.store.start_run(dead)
        manager._reaped_at = -1e9  # as if the last look was long ago
        manager.get_job_status("j")  # a status read looks for runs whose process died
        # The election thread looks too, every second: whichever marks it tells the
        # listeners, possibly just after this thread's look found it taken.
        deadline = time.monotonic() + 10
        while not recorder.seen and time.monotonic() < deadline:
            manager.flush_listeners(1)
            time.sleep(0.01)
        assert manager.flush_listeners(5)
    assert [(event, run.run_id, run.outcome) for event, run, _ in recorder.seen] == [
        ("abandoned", "dead-run", "abandoned")
    ]


def test_bad_listeners_are_refused(manager: LocalJobManager) -> None:
    with pytest.raises(ValueError, match="listener events must be some of started"):
        manager.add_listener(lambda run: None, events=("fail",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must accept the run"):
        manager.add_listener(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        manager.add_listener("not a function")  # type: ignore[arg-type]


def test_a_removed_listener_is_not_called(manager: LocalJobManager) -> None:
    runs: List[JobRun] = []
    manager.add_listener(runs.append, events=("completed",))
    assert manager.remove_listener(runs.append) is True
    assert manager.remove_listener(runs.append) is False
    manager.schedule_job("ok", "OK", lambda: None, 3600)
    manager.trigger_job("ok")
    assert manager.flush_listeners(5) and runs == []


def test_run_log_records_carry_job_run_and_trigger(
    manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bgjobs")
    manager.schedule_job("bad", "Bad", boom, 3600)
    manager.trigger_job("bad")
    run = manager.get_job_runs("bad")[0]
    records = [r for r in caplog.records if getattr(r, "job_id", None) == "bad"]
    assert any(r.levelno == logging.ERROR for r in records)
    assert any("started" in r.getMessage() for r in records)
    for record in records:
        assert (record.run_id, record.trigger) == (run.run_id, "manual")  # type: ignore[attr-defined]


def test_closing_delivers_the_last_events_first() -> None:
    got: List[str] = []
    gate = threading.Event()

    def slow(run: JobRun) -> None:
        gate.wait(0.2)
        got.append(run.job_id)

    manager = LocalJobManager(env={})
    manager.add_listener(slow, events=("failed",))
    manager.schedule_job("bad", "Bad", boom, 3600)
    manager.trigger_job("bad")
    manager.close()
    assert got == ["bad"]


def test_a_run_ending_during_interpreter_exit_still_tells_its_listeners() -> None:
    """On Python 3.12+ no thread can start once the interpreter exits: the first event then
    is delivered by the thread that ran the job instead of raising out of the run."""
    import subprocess
    import sys

    code = """
import threading
from bgjobs.local import LocalJobManager
m = LocalJobManager(env={})
told = []
m.add_listener(lambda run: told.append(f"told {run.job_id} {run.outcome}"), events=("completed",))
m.schedule_job("late", "Late", lambda: None, 3600)

def late():
    ran = m.trigger_job("late")
    m.flush_listeners(5)  # delivered here (3.12+) or by the listener thread (before 3.12)
    print("ran", ran, *told, flush=True)

threading._register_atexit(late)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.split() == ["ran", "True", "told", "late", "completed"], done.stdout
