"""LocalJobManager with real timer threads: timing, overlap, failures, stopping.

Intervals are 50-200 ms. Tests wait on events with generous timeouts, never for a fixed
long time; the only fixed waits are the few intervals a "nothing more happens" check needs.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, List, Tuple

import pytest

from bgjobs import InvalidScheduleError, LocalJobManager
from bgjobs.schedules import IntervalSchedule

HOUR = 3600.0


@pytest.fixture(autouse=True)
def _fail_on_thread_errors(thread_errors: List[BaseException]) -> None:
    """Every test here fails if a thread (a timer, a worker) dies with an exception."""


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


class Calls:
    """Counts calls of a job function; ``wait_for(n)`` blocks until n calls started."""

    def __init__(self, action: Callable[[], None] = lambda: None) -> None:
        self.times: List[float] = []
        self._cond = threading.Condition()
        self._action = action

    def __call__(self) -> None:
        with self._cond:
            self.times.append(time.monotonic())
            self._cond.notify_all()
        self._action()

    @property
    def count(self) -> int:
        with self._cond:
            return len(self.times)

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.times) >= n, timeout)


def status_of(manager: LocalJobManager, job_id: str) -> Any:
    status = manager.get_job_status(job_id)
    assert status is not None
    return status


def finished_runs(manager: LocalJobManager, job_id: str, n: int) -> bool:
    return wait_until(lambda: status_of(manager, job_id).runs >= n)


def snapshot_when(
    manager: LocalJobManager, job_id: str, predicate: Callable[[Any], bool]
) -> Any:
    """The first status snapshot of ``job_id`` for which ``predicate`` holds (5 s at most)."""
    found: List[Any] = []

    def check() -> bool:
        status = status_of(manager, job_id)
        if predicate(status):
            found.append(status)
            return True
        return False

    assert wait_until(check), f"job {job_id!r} never reached the expected state"
    return found[0]


# --- timing --------------------------------------------------------------------------------


def test_first_run_comes_one_interval_after_scheduling(manager: LocalJobManager) -> None:
    calls = Calls()
    before_wall = datetime.now(timezone.utc)
    start = time.monotonic()
    manager.schedule_job("first", "First", calls, 0.2)
    after_wall = datetime.now(timezone.utc)
    next_run = status_of(manager, "first").next_run
    slack = timedelta(milliseconds=5)  # converting monotonic due times to wall time
    assert before_wall + timedelta(seconds=0.2) - slack <= next_run
    assert next_run <= after_wall + timedelta(seconds=0.2) + slack
    assert calls.wait_for(1)
    elapsed = calls.times[0] - start
    # Not before the interval; the upper bound only allows for a loaded machine.
    assert 0.2 - 0.002 <= elapsed < 0.2 + 0.3, f"first run after {elapsed:.3f}s"


def _least_squares_slope(xs: List[float], ys: List[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def test_interval_runs_do_not_drift(manager: LocalJobManager) -> None:
    """The lateness of run k against ``start + k * interval`` does not grow.

    Scheduling noise is one-sided (a thread can wake late, never early) and on a loaded
    machine it reaches tens of milliseconds, so the assertions use the lower envelope of
    the lateness (its minimum over windows of 10 runs), which drift moves and noise does
    not. A scheduler that re-arms from the end of each run drifts by at least the run's
    overhead per run (measured at 0.5-12 ms/run) and fails both checks.
    """
    interval, wanted, window = 0.05, 50, 10
    lock = threading.Lock()
    # (tick index, monotonic time) of each run. The tick index counts the ticks missed
    # under load too, which the manager reports as skips before the run starts.
    runs: List[Tuple[int, float]] = []
    done = threading.Event()

    def job() -> None:
        now = time.monotonic()
        status = manager.get_job_status("drift")
        assert status is not None
        with lock:
            runs.append((status.runs + status.skips + 1, now))
            if len(runs) >= wanted:
                done.set()

    # The true start lies between these two readings (the test thread may be preempted).
    start_before = time.monotonic()
    manager.schedule_job("drift", "Drift", job, interval)
    start = time.monotonic()
    assert done.wait(wanted * interval + 10)
    manager.stop_job("drift")
    with lock:
        sample = runs[:wanted]
    ticks = [float(k) for k, _ in sample]
    lateness = [t - (start + k * interval) for k, t in sample]
    windows = [
        (statistics.fmean(ticks[i : i + window]), min(lateness[i : i + window]))
        for i in range(0, wanted, window)
    ]
    envelope_slope = _least_squares_slope([w[0] for w in windows], [w[1] for w in windows])
    raw_slope = _least_squares_slope(ticks, lateness)
    last_floor = min(lateness[-window:])
    print(
        f"\ndrift over {len(sample)} runs of a {interval * 1000:.0f} ms job: "
        f"run 1 late {lateness[0] * 1000:.2f} ms, run {int(ticks[-1])} late "
        f"{lateness[-1] * 1000:.2f} ms; median of last 5 "
        f"{statistics.median(lateness[-5:]) * 1000:.2f} ms; least-squares slope "
        f"{raw_slope * 1000:.4f} ms/run; lower envelope: first/last window "
        f"{windows[0][1] * 1000:.2f}/{windows[-1][1] * 1000:.2f} ms, slope "
        f"{envelope_slope * 1000:.4f} ms/run; max {max(lateness) * 1000:.2f} ms; "
        f"missed ticks {int(ticks[-1]) - len(sample)}"
    )
    earliest = min(t - (start_before + k * interval) for k, t in sample)
    assert earliest > -0.002, "a run started before its due time"
    assert last_floor < 0.020, f"the last {window} runs were all at least 20 ms late"
    assert envelope_slope < 0.0002, f"lateness grows by {envelope_slope * 1000:.3f} ms/run"


def test_slow_job_never_overlaps_and_skipped_ticks_are_counted(
    manager: LocalJobManager,
) -> None:
    lock = threading.Lock()
    active = [0]
    peak = [0]

    def slow() -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.17)  # the job's own work: over three 50 ms intervals
        with lock:
            active[0] -= 1

    calls = Calls(slow)
    manager.schedule_job("slow", "Slow", calls, 0.05)
    assert calls.wait_for(3, timeout=10)
    manager.stop_all_jobs(wait=True, timeout=5)
    status = status_of(manager, "slow")
    metrics = manager.get_job_metrics()
    assert peak[0] == 1
    assert status.skips >= 4, status  # each 170 ms run covers about three ticks
    assert status.skips == metrics.skipped_executions
    assert status.runs == metrics.total_executions == calls.count


def test_failing_job_is_recorded_logged_and_keeps_its_schedule(
    manager: LocalJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise ValueError("boom")

    calls = Calls(boom)
    with caplog.at_level(logging.ERROR, logger="bgjobs"):
        manager.schedule_job("fragile", "Fragile", calls, 0.05)
        assert calls.wait_for(3)  # it ran again after failing, twice
        status = snapshot_when(manager, "fragile", lambda s: s.runs >= 3 and s.status != "running")
        assert status.status == "failed"
        assert status.error == "ValueError: boom"
        assert status.next_run is not None
        manager.stop_all_jobs(wait=True)
    status = status_of(manager, "fragile")
    assert status.error is None  # stopped now: error is shown only while failed
    assert status.failures == status.runs >= 3
    metrics = manager.get_job_metrics()
    assert metrics.failed_jobs == status.runs and metrics.successful_jobs == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) >= 3
    for record in errors:
        assert "fragile" in record.getMessage()
        assert record.exc_info is not None and record.exc_info[0] is ValueError


def test_failing_job_status_is_failed_between_runs(manager: LocalJobManager) -> None:
    def boom() -> None:
        raise ValueError("boom")

    calls = Calls(boom)
    manager.schedule_job("fragile", "Fragile", calls, 0.2)
    assert calls.wait_for(1)
    status = snapshot_when(manager, "fragile", lambda s: s.runs >= 1 and s.status != "running")
    assert (status.status, status.error) == ("failed", "ValueError: boom")
    assert status.next_run is not None


def test_rescheduling_the_same_id_replaces_the_job(manager: LocalJobManager) -> None:
    replaced = threading.Event()
    old, new = Calls(lambda: replaced.wait(5)), Calls()
    manager.schedule_job("first", "First", lambda: None, HOUR)
    manager.schedule_job("swap", "Old", old, 0.05)
    manager.schedule_job("last", "Last", lambda: None, HOUR)
    assert old.wait_for(1)
    manager.schedule_job("swap", "New", new, 0.05)  # while the old job's first run goes on
    replaced.set()
    assert new.wait_for(4)
    time.sleep(0.1)  # two more of the old job's intervals
    assert old.count == 1
    statuses = manager.get_all_job_statuses()
    assert [s.id for s in statuses] == ["first", "swap", "last"]
    assert statuses[1].name == "New" and statuses[1].schedule == "every 0.05s"


def test_a_failed_replacement_leaves_the_old_job_running(manager: LocalJobManager) -> None:
    calls = Calls()
    manager.schedule_job("keep", "Keep", calls, 0.05)
    assert calls.wait_for(1)
    with pytest.raises(InvalidScheduleError):
        manager.schedule_job("keep", "Keep v2", lambda: None, float("nan"))
    with pytest.raises(InvalidScheduleError):
        manager.schedule_cron_job("keep", "Keep v2", lambda: None, "0 0 30 2 *")
    with pytest.raises(TypeError):
        manager.schedule_job("keep", "Keep v2", None, 0.05)  # type: ignore[arg-type]
    seen = calls.count
    assert calls.wait_for(seen + 2)  # still ticking
    status = status_of(manager, "keep")
    assert (status.name, status.schedule) == ("Keep", "every 0.05s")
    assert status.next_run is not None


def test_a_job_can_reschedule_itself_from_inside_its_run(manager: LocalJobManager) -> None:
    v2 = Calls()

    def v1_action() -> None:
        if v1.count == 1:
            manager.schedule_job("self", "Self v2", v2, 0.05)

    v1 = Calls(v1_action)
    manager.schedule_job("self", "Self v1", v1, 0.05)
    assert v2.wait_for(3)
    assert v1.count == 1
    assert status_of(manager, "self").name == "Self v2"


# --- stopping --------------------------------------------------------------------------------


def test_stop_job_is_final_and_idempotent(manager: LocalJobManager) -> None:
    calls = Calls()
    manager.schedule_job("ticker", "Ticker", calls, 0.1)
    assert calls.wait_for(2)
    manager.stop_job("ticker")
    manager.stop_job("ticker")
    manager.stop_job("no-such-job")
    assert wait_until(lambda: manager.running_job_ids() == [])  # a run already started ends
    count = calls.count
    time.sleep(0.35)  # three intervals and a half
    assert calls.count == count
    status = status_of(manager, "ticker")
    assert status.status == "stopped" and status.next_run is None
    assert wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "bgjobs-ticker"], 1.0
    ), "a timer thread of the stopped job is still alive"


def _replace(manager: LocalJobManager, job_id: str) -> None:
    manager.schedule_job(job_id, "Replacement", lambda: None, HOUR)


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(lambda m, job_id: m.stop_job(job_id), id="stop_job"),
        pytest.param(lambda m, job_id: m.stop_all_jobs(wait=True, timeout=5), id="stop_all_jobs"),
        pytest.param(_replace, id="replacement"),
    ],
)
def test_no_scheduled_run_starts_after_stop_returns(
    manager: LocalJobManager,
    stop: Callable[[LocalJobManager, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tick that already decided to fire when the job is stopped (or replaced) must not
    run it: the stopped check and the start of the run are atomic (``run_scheduled``)."""
    # Hold the first tick right after it decided to fire (while it asks the schedule for
    # the next due time), stop the job, then let the tick go on. Patched before the job
    # exists, so even a very late test thread cannot miss the first tick.
    original = IntervalSchedule.next_due
    in_tick, resume = threading.Event(), threading.Event()
    tick_threads: List[threading.Thread] = []

    def paused(self: IntervalSchedule, previous_due: float, now: float) -> Tuple[float, int]:
        if not tick_threads:
            tick_threads.append(threading.current_thread())
            in_tick.set()
            resume.wait(5)
        return original(self, previous_due, now)

    monkeypatch.setattr(IntervalSchedule, "next_due", paused)
    calls = Calls()
    manager.schedule_job("racy", "Racy", calls, 0.05)
    assert in_tick.wait(5)
    stop(manager, "racy")
    tick = tick_threads[0]
    assert tick.name == "bgjobs-racy"  # a pool worker carries the job's name during its tick
    resume.set()
    # The tick is over when the worker takes its pool name back (or, were it a thread of
    # its own, when it ends).
    deadline = time.monotonic() + 5
    while tick.name == "bgjobs-racy" and tick.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert tick.name != "bgjobs-racy" or not tick.is_alive()
    assert calls.count == 0, "the stopped job ran after stop returned"


def test_run_still_going_when_its_job_is_stopped_ends_stopped(manager: LocalJobManager) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        assert release.wait(10)
        raise ValueError("late failure")

    manager.schedule_job("busy", "Busy", blocking, 0.05)
    try:
        assert started.wait(5)
        manager.stop_job("busy")
        assert status_of(manager, "busy").status == "stopped"
    finally:
        release.set()
    assert finished_runs(manager, "busy", 1)
    status = status_of(manager, "busy")
    assert (status.status, status.next_run, status.error) == ("stopped", None, None)
    assert status.runs == 1


def test_stop_all_with_wait_blocks_until_the_running_job_ends(manager: LocalJobManager) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    released_at: List[float] = []

    def blocking() -> None:
        started.set()
        release.wait(10)
        finished.set()

    def do_release() -> None:
        released_at.append(time.monotonic())
        release.set()

    manager.schedule_job("busy", "Busy", blocking, 0.05)
    manager.schedule_job("idle", "Idle", lambda: None, HOUR)
    assert started.wait(5)
    releaser = threading.Timer(0.2, do_release)
    releaser.start()
    manager.stop_all_jobs(wait=True)
    returned_at = time.monotonic()
    releaser.join()
    assert finished.is_set()
    assert returned_at >= released_at[0]
    assert {s.status for s in manager.get_all_job_statuses()} == {"stopped"}
    assert manager.running_job_ids() == []


def test_stop_all_wait_timeout_bounds_the_wait(manager: LocalJobManager) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)

    manager.schedule_job("stuck", "Stuck", blocking, 0.05)
    try:
        assert started.wait(5)
        begin = time.monotonic()
        manager.stop_all_jobs(wait=True, timeout=0.2)
        waited = time.monotonic() - begin
        assert 0.19 <= waited < 1.5
        assert manager.running_job_ids() == ["stuck"]
    finally:
        release.set()
    assert finished_runs(manager, "stuck", 1)
    assert status_of(manager, "stuck").status == "stopped"


def test_stop_all_without_wait_returns_at_once(manager: LocalJobManager) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)

    manager.schedule_job("stuck", "Stuck", blocking, 0.05)
    try:
        assert started.wait(5)
        begin = time.monotonic()
        manager.stop_all_jobs()
        assert time.monotonic() - begin < 2.0  # the job itself runs for up to 10 s
        assert manager.running_job_ids() == ["stuck"]
    finally:
        release.set()


def test_a_job_can_stop_itself_from_inside_its_run(manager: LocalJobManager) -> None:
    def action() -> None:
        if calls.count == 2:
            manager.stop_job("quitter")

    calls = Calls(action)
    manager.schedule_job("quitter", "Quitter", calls, 0.1)
    assert calls.wait_for(2)
    assert finished_runs(manager, "quitter", 2)
    time.sleep(0.3)  # three intervals
    assert calls.count == 2
    status = status_of(manager, "quitter")
    assert (status.status, status.next_run, status.runs) == ("stopped", None, 2)


def test_stop_all_with_wait_from_inside_a_job_does_not_deadlock(
    manager: LocalJobManager,
) -> None:
    returned = threading.Event()

    def stopper() -> None:
        manager.stop_all_jobs(wait=True)
        returned.set()

    manager.schedule_job("stopper", "Stopper", stopper, 0.05)
    manager.schedule_job("other", "Other", lambda: None, 0.05)
    assert returned.wait(5), "stop_all_jobs(wait=True) inside a job never returned"
    assert finished_runs(manager, "stopper", 1)
    assert {s.status for s in manager.get_all_job_statuses()} == {"stopped"}


def test_stop_all_with_wait_inside_a_triggered_job_does_not_deadlock(
    manager: LocalJobManager,
) -> None:
    returned: List[bool] = []

    def stopper() -> None:
        manager.stop_all_jobs(wait=True)
        returned.append(True)

    manager.schedule_job("stopper", "Stopper", stopper, HOUR)
    worker = threading.Thread(target=manager.trigger_job, args=("stopper",), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and returned == [True]


# --- other runtime properties -------------------------------------------------------------------


def test_async_job_on_a_timer_runs_to_completion(manager: LocalJobManager) -> None:
    finished = Calls()

    async def job() -> None:
        await asyncio.sleep(0.01)
        finished()

    manager.schedule_job("async", "Async", job, 0.05)
    assert finished.wait_for(2)
    assert finished_runs(manager, "async", 2)
    assert status_of(manager, "async").failures == 0


def test_threads_are_daemons_and_a_run_carries_the_job_name(manager: LocalJobManager) -> None:
    seen: List[Tuple[str, bool]] = []
    ran = threading.Event()

    def record() -> None:
        thread = threading.current_thread()
        seen.append((thread.name, thread.daemon))
        ran.set()

    manager.schedule_job("named", "Named", record, 0.05)
    manager.schedule_job("idle", "Idle", lambda: None, HOUR)
    assert ran.wait(5)
    assert seen[0] == ("bgjobs-named", True)
    ours = [t for t in threading.enumerate() if t.name.startswith("bgjobs")]
    assert ours and all(t.daemon for t in ours)
    # One waiting thread serves every job: the hour-long job has no thread of its own.
    assert not [t for t in threading.enumerate() if t.name == "bgjobs-idle"]


def test_cron_job_with_a_seconds_field_fires_on_the_real_clock(manager: LocalJobManager) -> None:
    starts: List[datetime] = []  # last_run as seen from inside each run: that run's start
    calls = Calls(lambda: starts.append(status_of(manager, "tick").last_run))
    manager.schedule_cron_job("tick", "Tick", calls, "* * * * * *")
    next_run = status_of(manager, "tick").next_run
    assert next_run.microsecond == 0
    assert calls.wait_for(1, timeout=3) and wait_until(lambda: bool(starts))
    assert starts[0] >= next_run
    assert (starts[0] - next_run).total_seconds() < 1.0


@pytest.mark.parametrize("bad", ["0", "-3", "many", "1.5"])
def test_a_bad_max_workers_setting_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="BGJOBS_MAX_WORKERS"):
        LocalJobManager(env={"BGJOBS_MAX_WORKERS": bad})


def test_max_workers_bounds_concurrent_scheduled_runs() -> None:
    manager = LocalJobManager(env={}, max_workers=2)
    lock = threading.Lock()
    active, peak = [0], [0]
    runs = threading.Semaphore(0)

    def slow() -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.1)
        with lock:
            active[0] -= 1
        runs.release()

    try:
        for i in range(5):
            manager.schedule_job(f"slow-{i}", "Slow", slow, 0.05)
        for _ in range(10):
            assert runs.acquire(timeout=10)
    finally:
        manager.stop_all_jobs(wait=True, timeout=5)
    assert peak[0] == 2
