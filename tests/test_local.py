"""LocalJobManager with real timer threads: timing, overlap, failures, stopping.

Most tests run on a :class:`ManualClock`: a job is due when the test moves the clock,
the run happens on a real worker thread, and the test waits for it on an event (5 s at
most, which only a broken manager needs). "Nothing more runs" checks move the clock past
the fires that must not happen and wait until the timers have caught up with it. A few
tests keep the real clock, for what only it can show (drift, a cron on the wall clock,
timeouts in real seconds), with bounds a loaded two-core machine keeps.
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
from support_clock import ManualClock, caught_up

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


def advance(manager: LocalJobManager, clock: ManualClock, seconds: float, times: int = 1) -> None:
    """Move ``clock`` on by ``seconds``, ``times`` times; each time, return once every tick
    due by then has run to its end (``manager`` has one worker, so ticks and their runs
    happen in due order). One interval at a time: a bigger step coalesces the fires it
    passes, as a late timer does."""
    for _ in range(times):
        clock.advance(seconds)
        caught_up(manager._timers, clock)


def status_of(manager: LocalJobManager, job_id: str) -> Any:
    status = manager.get_job_status(job_id)
    assert status is not None
    return status


def finished_runs(manager: LocalJobManager, job_id: str, n: int) -> bool:
    return wait_until(lambda: status_of(manager, job_id).runs >= n)


def snapshot_when(manager: LocalJobManager, job_id: str, predicate: Callable[[Any], bool]) -> Any:
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


def test_first_run_comes_one_interval_after_scheduling(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    calls = Calls()
    scheduled_at = datetime.fromtimestamp(clock.time(), timezone.utc)
    manual_manager.schedule_job("first", "First", calls, 0.5)
    next_run = status_of(manual_manager, "first").next_run
    assert next_run == scheduled_at + timedelta(seconds=0.5)
    advance(manual_manager, clock, 0.5 - 2**-20)
    assert calls.count == 0  # not a moment before its due time
    clock.advance(2**-20)
    assert calls.wait_for(1)
    assert finished_runs(manual_manager, "first", 1)
    assert status_of(manual_manager, "first").last_run == next_run


def _least_squares_slope(xs: List[float], ys: List[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def test_interval_runs_do_not_drift(manager: LocalJobManager) -> None:
    """The lateness of run k against ``start + k * interval`` does not grow (real clock).

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


def test_runs_stay_on_the_grid_of_due_times_however_long_they_take(clock: ManualClock) -> None:
    """Each next due time is the previous due time plus the interval, not the end of the
    run plus the interval (which drifts by the run's length every run)."""
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    start = clock.time()
    nexts: List[float] = []

    def job() -> None:
        clock.advance(0.25)  # a run that takes a quarter of its interval
        status = status_of(manager, "grid")
        nexts.append(status.next_run.timestamp())

    try:
        manager.schedule_job("grid", "Grid", job, 1.0)
        advance(manager, clock, 1.0)  # due at start + 1; the run ends at start + 1.25
        advance(manager, clock, 0.75, times=2)  # due at start + 2, then start + 3
        assert nexts == [start + 2.0, start + 3.0, start + 4.0]
        assert status_of(manager, "grid").skips == 0
    finally:
        manager.stop_all_jobs(wait=True, timeout=5)


def test_slow_job_never_overlaps_and_skipped_ticks_are_counted(clock: ManualClock) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=2)  # a tick finds it busy
    lock = threading.Lock()
    active, peak = [0], [0]
    release = threading.Semaphore(0)

    def slow() -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        assert release.acquire(timeout=5)  # the job's own work, as long as the test says
        with lock:
            active[0] -= 1

    calls = Calls(slow)
    try:
        manager.schedule_job("slow", "Slow", calls, 0.25)
        for run in (1, 2):
            clock.advance(0.25)
            assert calls.wait_for(run)
            for tick in range(1, 4):  # three ticks come while this run goes on
                clock.advance(0.25)
                skips = 3 * (run - 1) + tick
                assert wait_until(lambda: status_of(manager, "slow").skips == skips)  # noqa: B023
            release.release()
            assert finished_runs(manager, "slow", run)
        manager.stop_all_jobs(wait=True, timeout=5)
    finally:
        for _ in range(2):
            release.release()
        manager.stop_all_jobs(wait=True, timeout=5)
    status = status_of(manager, "slow")
    metrics = manager.get_job_metrics()
    assert peak[0] == 1
    assert status.skips == metrics.skipped_executions == 6
    assert status.runs == metrics.total_executions == calls.count == 2


def test_failing_job_is_recorded_logged_and_keeps_its_schedule(
    manual_manager: LocalJobManager, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise ValueError("boom")

    calls = Calls(boom)
    with caplog.at_level(logging.ERROR, logger="bgjobs"):
        manual_manager.schedule_job("fragile", "Fragile", calls, 0.25)
        advance(manual_manager, clock, 0.25, times=3)  # it runs again after failing, twice
        status = status_of(manual_manager, "fragile")
        assert (status.runs, status.status) == (3, "failed")
        assert status.error == "ValueError: boom"
        assert status.next_run is not None
        manual_manager.stop_all_jobs(wait=True)
    status = status_of(manual_manager, "fragile")
    assert status.error is None  # stopped now: error is shown only while failed
    assert status.failures == status.runs == calls.count == 3
    metrics = manual_manager.get_job_metrics()
    assert metrics.failed_jobs == 3 and metrics.successful_jobs == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    for record in errors:
        assert "fragile" in record.getMessage()
        assert record.exc_info is not None and record.exc_info[0] is ValueError


def test_failing_job_status_is_failed_between_runs(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    def boom() -> None:
        raise ValueError("boom")

    manual_manager.schedule_job("fragile", "Fragile", boom, 0.25)
    advance(manual_manager, clock, 0.25)
    status = status_of(manual_manager, "fragile")
    assert (status.status, status.error, status.runs) == ("failed", "ValueError: boom", 1)
    assert status.next_run is not None


def test_rescheduling_the_same_id_replaces_the_job(clock: ManualClock) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=1)
    replaced = threading.Event()
    old, new = Calls(lambda: replaced.wait(5)), Calls()
    try:
        manager.schedule_job("first", "First", lambda: None, HOUR)
        manager.schedule_job("swap", "Old", old, 0.25)
        manager.schedule_job("last", "Last", lambda: None, HOUR)
        clock.advance(0.25)
        assert old.wait_for(1)
        manager.schedule_job("swap", "New", new, 0.25)  # while the old job's first run goes on
        replaced.set()
        advance(manager, clock, 0.25, times=4)  # the old job's next four due times too
        assert (new.count, old.count) == (4, 1)
        statuses = manager.get_all_job_statuses()
        assert [s.id for s in statuses] == ["first", "swap", "last"]
        assert statuses[1].name == "New" and statuses[1].schedule == "every 0.25s"
    finally:
        replaced.set()
        manager.stop_all_jobs(wait=True, timeout=5)


def test_a_failed_replacement_leaves_the_old_job_running(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    calls = Calls()
    manual_manager.schedule_job("keep", "Keep", calls, 0.25)
    advance(manual_manager, clock, 0.25)
    assert calls.count == 1
    with pytest.raises(InvalidScheduleError):
        manual_manager.schedule_job("keep", "Keep v2", lambda: None, float("nan"))
    with pytest.raises(InvalidScheduleError):
        manual_manager.schedule_cron_job("keep", "Keep v2", lambda: None, "0 0 30 2 *")
    with pytest.raises(TypeError):
        manual_manager.schedule_job("keep", "Keep v2", None, 0.25)  # type: ignore[arg-type]
    advance(manual_manager, clock, 0.25, times=2)  # still ticking
    assert calls.count == 3
    status = status_of(manual_manager, "keep")
    assert (status.name, status.schedule) == ("Keep", "every 0.25s")
    assert status.next_run is not None


def test_a_job_can_reschedule_itself_from_inside_its_run(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    v2 = Calls()

    def v1_action() -> None:
        if v1.count == 1:
            manual_manager.schedule_job("self", "Self v2", v2, 0.25)

    v1 = Calls(v1_action)
    manual_manager.schedule_job("self", "Self v1", v1, 0.25)
    advance(manual_manager, clock, 0.25, times=4)
    assert (v1.count, v2.count) == (1, 3)
    assert status_of(manual_manager, "self").name == "Self v2"


# --- stopping --------------------------------------------------------------------------------


def test_stop_job_is_final_and_idempotent(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    calls = Calls()
    manual_manager.schedule_job("ticker", "Ticker", calls, 0.5)
    advance(manual_manager, clock, 0.5, times=2)
    assert calls.count == 2
    manual_manager.stop_job("ticker")
    manual_manager.stop_job("ticker")
    manual_manager.stop_job("no-such-job")
    assert manual_manager._timers.pending() == 0  # its timer is cancelled, not just ignored
    advance(manual_manager, clock, 0.5, times=3)  # three more due times pass
    assert calls.count == 2
    status = status_of(manual_manager, "ticker")
    assert status.status == "stopped" and status.next_run is None
    assert not [t for t in threading.enumerate() if t.name == "bgjobs-ticker"], (
        "a thread still carries the stopped job's name"
    )


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
    manual_manager: LocalJobManager,
    clock: ManualClock,
    stop: Callable[[LocalJobManager, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tick that already decided to fire when the job is stopped (or replaced) must not
    run it: the stopped check and the start of the run are atomic (``run_scheduled``)."""
    # Hold the first tick right after it decided to fire (while it asks the schedule for
    # the next due time), stop the job, then let the tick go on.
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
    manual_manager.schedule_job("racy", "Racy", calls, 0.25)
    clock.advance(0.25)
    assert in_tick.wait(5)
    stop(manual_manager, "racy")
    tick = tick_threads[0]
    assert tick.name == "bgjobs-racy"  # a pool worker carries the job's name during its tick
    resume.set()
    caught_up(manual_manager._timers, clock)  # the one worker has finished that tick
    assert tick.name != "bgjobs-racy"
    assert calls.count == 0, "the stopped job ran after stop returned"


def test_run_still_going_when_its_job_is_stopped_ends_stopped(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        assert release.wait(10)
        raise ValueError("late failure")

    manual_manager.schedule_job("busy", "Busy", blocking, 0.25)
    try:
        clock.advance(0.25)
        assert started.wait(5)
        manual_manager.stop_job("busy")
        assert status_of(manual_manager, "busy").status == "stopped"
    finally:
        release.set()
    caught_up(manual_manager._timers, clock)
    status = status_of(manual_manager, "busy")
    assert (status.status, status.next_run, status.error) == ("stopped", None, None)
    assert status.runs == 1


def test_stop_all_with_wait_blocks_until_the_running_job_ends(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    started, release, returned = threading.Event(), threading.Event(), threading.Event()
    returned_before_the_end: List[bool] = []

    def blocking() -> None:
        started.set()
        release.wait(10)
        returned_before_the_end.append(returned.is_set())

    def stop_all() -> None:
        manual_manager.stop_all_jobs(wait=True)
        returned.set()

    manual_manager.schedule_job("busy", "Busy", blocking, 0.25)
    manual_manager.schedule_job("idle", "Idle", lambda: None, HOUR)
    clock.advance(0.25)
    assert started.wait(5)
    stopper = threading.Thread(target=stop_all)
    stopper.start()
    try:
        assert wait_until(lambda: status_of(manual_manager, "idle").status == "stopped")
        # Stopping is done and stop_all_jobs waits now; were it not to, it would have
        # returned already.
        assert not returned.wait(0.1)
    finally:
        release.set()
        stopper.join(5)
    assert returned.is_set() and returned_before_the_end == [False]
    assert {s.status for s in manual_manager.get_all_job_statuses()} == {"stopped"}
    assert manual_manager.running_job_ids() == []


def test_stop_all_wait_timeout_bounds_the_wait(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)

    manual_manager.schedule_job("stuck", "Stuck", blocking, 0.25)
    try:
        clock.advance(0.25)
        assert started.wait(5)
        begin = time.monotonic()
        manual_manager.stop_all_jobs(wait=True, timeout=0.2)  # real seconds
        waited = time.monotonic() - begin
        assert 0.19 <= waited < 2.0
        assert manual_manager.running_job_ids() == ["stuck"]
    finally:
        release.set()
    assert finished_runs(manual_manager, "stuck", 1)
    assert status_of(manual_manager, "stuck").status == "stopped"


def test_stop_all_without_wait_returns_at_once(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    started, release = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(10)

    manual_manager.schedule_job("stuck", "Stuck", blocking, 0.25)
    try:
        clock.advance(0.25)
        assert started.wait(5)
        begin = time.monotonic()
        manual_manager.stop_all_jobs()
        assert time.monotonic() - begin < 2.0  # the job itself runs for up to 10 s
        assert manual_manager.running_job_ids() == ["stuck"]
    finally:
        release.set()


def test_a_job_can_stop_itself_from_inside_its_run(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    def action() -> None:
        if calls.count == 2:
            manual_manager.stop_job("quitter")

    calls = Calls(action)
    manual_manager.schedule_job("quitter", "Quitter", calls, 0.5)
    advance(manual_manager, clock, 0.5, times=5)
    assert calls.count == 2
    status = status_of(manual_manager, "quitter")
    assert (status.status, status.next_run, status.runs) == ("stopped", None, 2)


def test_stop_all_with_wait_from_inside_a_job_does_not_deadlock(clock: ManualClock) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=2)
    returned = threading.Event()

    def stopper() -> None:
        manager.stop_all_jobs(wait=True)
        returned.set()

    try:
        manager.schedule_job("stopper", "Stopper", stopper, 0.25)
        manager.schedule_job("other", "Other", lambda: None, 0.25)
        clock.advance(0.25)
        assert returned.wait(5), "stop_all_jobs(wait=True) inside a job never returned"
        assert finished_runs(manager, "stopper", 1)
        assert {s.status for s in manager.get_all_job_statuses()} == {"stopped"}
    finally:
        manager.stop_all_jobs(wait=True, timeout=5)


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


def test_async_job_on_a_timer_runs_to_completion(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    finished = Calls()

    async def job() -> None:
        await asyncio.sleep(0)
        finished()

    manual_manager.schedule_job("async", "Async", job, 0.25)
    advance(manual_manager, clock, 0.25, times=2)
    assert finished.count == 2
    status = status_of(manual_manager, "async")
    assert (status.runs, status.failures) == (2, 0)


def test_threads_are_daemons_and_a_run_carries_the_job_name(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    seen: List[Tuple[str, bool]] = []
    ran = threading.Event()

    def record() -> None:
        thread = threading.current_thread()
        seen.append((thread.name, thread.daemon))
        ran.set()

    manual_manager.schedule_job("named", "Named", record, 0.25)
    manual_manager.schedule_job("idle", "Idle", lambda: None, HOUR)
    clock.advance(0.25)
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
    assert calls.wait_for(1, timeout=5) and wait_until(lambda: bool(starts))
    assert starts[0] >= next_run
    assert (starts[0] - next_run).total_seconds() < 2.0


def test_a_cron_job_fires_at_its_wall_clock_times(
    manual_manager: LocalJobManager, clock: ManualClock
) -> None:
    starts: List[datetime] = []
    manual_manager.schedule_cron_job(
        "tick",
        "Tick",
        lambda: starts.append(status_of(manual_manager, "tick").last_run),
        "*/10 * * * * *",
    )
    first = status_of(manual_manager, "tick").next_run
    assert first.second % 10 == 0 and first.microsecond == 0
    advance(manual_manager, clock, first.timestamp() - clock.time() - 0.25)
    assert starts == []
    advance(manual_manager, clock, 0.25)
    advance(manual_manager, clock, 10, times=2)
    assert starts == [first, first + timedelta(seconds=10), first + timedelta(seconds=20)]


@pytest.mark.parametrize("bad", ["0", "-3", "many", "1.5"])
def test_a_bad_max_workers_setting_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="BGJOBS_MAX_WORKERS"):
        LocalJobManager(env={"BGJOBS_MAX_WORKERS": bad})


def test_max_workers_bounds_concurrent_scheduled_runs(clock: ManualClock) -> None:
    manager = LocalJobManager(clock=clock, env={}, max_workers=2)
    state = threading.Condition()
    active, peak, finished = [0], [0], [0]
    release = threading.Semaphore(0)

    def slow() -> None:
        with state:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            state.notify_all()
        assert release.acquire(timeout=5)
        with state:
            active[0] -= 1
            finished[0] += 1
            state.notify_all()

    try:
        for i in range(5):
            manager.schedule_job(f"slow-{i}", "Slow", slow, 0.25)
        clock.advance(0.25)  # five runs due at once, for two workers
        for n in range(5):
            busy, done = min(2, 5 - n), n + 1
            with state:
                assert state.wait_for(lambda: active[0] == busy, 5)  # noqa: B023
            release.release()
            with state:
                assert state.wait_for(lambda: finished[0] == done, 5)  # noqa: B023
    finally:
        for _ in range(5):
            release.release()
        manager.stop_all_jobs(wait=True, timeout=5)
    assert peak[0] == 2


@pytest.mark.parametrize("with_state_dir", [False, True], ids=["memory", "state-dir"])
def test_the_first_due_time_counts_from_the_call_not_from_its_setup(
    clock: ManualClock, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, with_state_dir: bool
) -> None:
    """``schedule_job(..., 60)`` runs first 60 s after it was called: the lock files and
    records it sets up (slow on a busy disk: 5 s here) do not move the grid."""
    from bgjobs._local.leadership import HostCoordinator, SoloCoordinator

    coordinator = HostCoordinator if with_state_dir else SoloCoordinator
    setup = coordinator.start

    def slow_start(self: Any, job: Any) -> None:
        clock.advance(5)
        setup(self, job)

    monkeypatch.setattr(coordinator, "start", slow_start)
    state = {"state_dir": tmp_path / "state"} if with_state_dir else {}
    manager = LocalJobManager(clock=clock, env={}, max_workers=1, **state)
    try:
        called, called_mono = clock.time(), clock.monotonic()
        manager.schedule_job("grid", "Grid", lambda: None, 60)
        assert clock.time() == called + 5
        status = status_of(manager, "grid")
        assert status.next_run == datetime.fromtimestamp(called + 60, timezone.utc)
        handle = manager._armed[manager._job("grid")]
        assert handle.due == called_mono + 60
        # A cron called 2 s before the hour, set up by 3 s past it: its first fire is that
        # hour (due already, so at once), not the next one.
        arms: List[Tuple[str, float]] = []
        arm = manager._arm
        monkeypatch.setattr(
            manager, "_arm", lambda job, due: (arms.append((job.id, due)), arm(job, due))
        )
        hour = (clock.time() // 3600 + 1) * 3600
        clock.advance(hour - 2 - clock.time())
        manager.schedule_cron_job("hourly", "Hourly", lambda: None, "0 * * * *")
        assert clock.time() == hour + 3
        assert next(due for job_id, due in arms if job_id == "hourly") == hour
    finally:
        manager.shutdown()
