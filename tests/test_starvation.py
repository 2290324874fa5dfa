"""A full worker pool never starves a job in silence (issue 11, fault 1).

Hung runs can occupy every worker; the pool does not grow past ``max_workers``. A due
fire that has waited :data:`~bgjobs._local.timers.STARVED_AFTER` seconds for a worker is
logged with the jobs that wait and those that occupy the pool, counted (the job's
``starved_fires``, the metrics' ``starved_fires``), and the waiting job's status shows
``waiting_since``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Iterator, List

import pytest
from support_clock import ManualClock

from bgjobs._local.timers import STARVED_AFTER
from bgjobs._web.prometheus import render_metrics
from bgjobs.local import LocalJobManager
from bgjobs.schedules import utc_datetime


@pytest.fixture(autouse=True)
def _fail_on_thread_errors(thread_errors: List[BaseException]) -> None:
    """Every test here fails if a thread (a timer, a worker, the watch) dies."""


def _until(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return bool(condition())


class Hung:
    """Jobs that block until released; ``started[id]`` is set once each runs."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: Dict[str, threading.Event] = {}

    def job(self, job_id: str) -> Callable[[], None]:
        started = self.started.setdefault(job_id, threading.Event())

        def run() -> None:
            started.set()
            self.release.wait(30)

        return run


@pytest.fixture
def hung() -> Iterator[Hung]:
    jobs = Hung()
    try:
        yield jobs
    finally:
        jobs.release.set()


def _warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if "every worker is busy" in r.getMessage()]


def test_a_fire_starved_by_hung_runs_is_logged_counted_and_shown(
    clock: ManualClock, hung: Hung, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=2)
    beat = threading.Event()
    try:
        manager.schedule_job("hung-a", "Hung A", hung.job("hung-a"), 10)
        manager.schedule_job("hung-b", "Hung B", hung.job("hung-b"), 10)
        manager.schedule_job("beat", "Heartbeat", beat.set, 10)
        due = utc_datetime(clock.time() + 10)
        with caplog.at_level(logging.WARNING, logger="bgjobs"):
            clock.advance(10)
            assert hung.started["hung-a"].wait(10) and hung.started["hung-b"].wait(10)

            # Waiting, and the status says so at once; not reported before the threshold.
            def waiting_since() -> object:
                status = manager.get_job_status("beat")
                assert status is not None
                return status.waiting_since

            assert _until(waiting_since)
            assert waiting_since() == due
            assert manager.get_job_metrics().starved_fires == 0
            assert _warnings(caplog) == []

            clock.advance(STARVED_AFTER)
            assert _until(lambda: manager.get_job_metrics().starved_fires == 1)
            assert _until(lambda: _warnings(caplog))
        (message,) = _warnings(caplog)
        assert "max_workers=2" in message
        assert "waiting 'beat' (1.0s)" in message
        assert "'hung-a' (for 1.0s)" in message and "'hung-b' (for 1.0s)" in message
        assert "BGJOBS_MAX_WORKERS" in message
        status = manager.get_job_status("beat")
        assert status is not None and status.starved_fires == 1
        assert status.to_dict()["waiting_since"] == due.isoformat()
        assert manager.get_job_metrics().to_dict()["starved_fires"] == 1
        exposition = render_metrics(manager.get_all_job_statuses(), manager.get_job_metrics())
        assert 'bgjobs_starved_fires_total{job="beat"} 1' in exposition
        hung_status = manager.get_job_status("hung-a")
        assert hung_status is not None and hung_status.waiting_since is None

        hung.release.set()  # a worker frees up: the heartbeat runs, and no longer waits
        assert beat.wait(10)
        assert _until(lambda: waiting_since() is None)
    finally:
        hung.release.set()
        manager.shutdown(timeout=10)


def test_starvation_is_warned_at_most_once_a_minute_but_every_fire_counts(
    clock: ManualClock, hung: Hung, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    try:
        manager.schedule_job("hung", "Hung", hung.job("hung"), 10)
        manager.schedule_job("a", "A", lambda: None, 10)
        with caplog.at_level(logging.WARNING, logger="bgjobs"):
            clock.advance(10)
            assert hung.started["hung"].wait(10)
            assert _until(lambda: manager._timers.waiting())
            clock.advance(STARVED_AFTER)
            assert _until(lambda: manager.get_job_metrics().starved_fires == 1)
            manager.schedule_job("b", "B", lambda: None, 5)  # due later, waits too
            clock.advance(5)
            assert _until(lambda: len(manager._timers.waiting()) == 2)
            clock.advance(STARVED_AFTER)
            assert _until(lambda: manager.get_job_metrics().starved_fires == 2)
        assert len(_warnings(caplog)) == 1
        statuses = {s.id: s.starved_fires for s in manager.get_all_job_statuses()}
        assert statuses == {"hung": 0, "a": 1, "b": 1}
    finally:
        hung.release.set()
        manager.shutdown(timeout=10)


def test_a_short_wait_for_a_worker_is_not_reported_and_the_watch_ends(
    clock: ManualClock, hung: Hung, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    ran = threading.Event()
    try:
        manager.schedule_job("slow", "Slow", hung.job("slow"), 10)
        manager.schedule_job("quick", "Quick", ran.set, 10)
        with caplog.at_level(logging.WARNING, logger="bgjobs"):
            clock.advance(10)
            assert hung.started["slow"].wait(10)
            assert _until(lambda: manager._timers.waiting())
            clock.advance(STARVED_AFTER / 2)
            hung.release.set()
            assert ran.wait(10)
        assert _warnings(caplog) == []
        assert manager.get_job_metrics().starved_fires == 0
        # Nothing has waited for a while, so the watching thread ends.
        clock.advance(STARVED_AFTER)
        assert _until(lambda: not manager._timers._watching)
    finally:
        hung.release.set()
        manager.shutdown(timeout=10)


def test_ten_hung_jobs_and_a_heartbeat_the_reported_case_in_real_time(
    hung: Hung, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case on the real clock: the default pool of 10, all hung; a 0.2 s
    heartbeat is starved, and that is said within about a second."""
    manager = LocalJobManager(env={})
    try:
        with caplog.at_level(logging.WARNING, logger="bgjobs"):
            for n in range(10):
                manager.schedule_job(f"hung-{n}", f"Hung {n}", hung.job(f"hung-{n}"), 0.05)
            assert all(_until(lambda n=n: f"hung-{n}" in hung.started) for n in range(10))
            assert all(event.wait(10) for event in hung.started.values())
            manager.schedule_job("heartbeat", "Heartbeat", lambda: None, 0.2)
            assert _until(lambda: _warnings(caplog), timeout=10)
        (message,) = _warnings(caplog)
        assert "waiting 'heartbeat'" in message and "max_workers=10" in message
        assert all(f"'hung-{n}' (for " in message for n in range(10))
        status = manager.get_job_status("heartbeat")
        assert status is not None and status.waiting_since is not None
        assert status.starved_fires == 1 and status.runs == 0
    finally:
        hung.release.set()
        manager.shutdown(timeout=10)


def test_the_warning_says_which_runs_occupying_the_pool_are_past_their_timeout(
    clock: ManualClock, hung: Hung, caplog: pytest.LogCaptureFixture
) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    try:
        manager.schedule_job("stuck", "Stuck", hung.job("stuck"), 10, timeout=0.5)
        manager.schedule_job("beat", "Heartbeat", lambda: None, 10)
        with caplog.at_level(logging.WARNING, logger="bgjobs"):
            clock.advance(10)
            assert hung.started["stuck"].wait(10)
            assert _until(lambda: manager._timers.waiting())
            clock.advance(0.5)

            def timed_out() -> bool:
                status = manager.get_job_status("stuck")
                return status is not None and status.timed_out

            assert _until(timed_out)
            clock.advance(STARVED_AFTER - 0.5)
            assert _until(lambda: _warnings(caplog))
        (message,) = _warnings(caplog)
        assert "running 'stuck' (for 1.0s, past its timeout)" in message
    finally:
        hung.release.set()
        manager.shutdown(timeout=10)
