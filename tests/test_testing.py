"""bgjobs.testing: a manual clock whose advance() runs due fires in the caller's thread,
in due order, by the real runtime's rules (overlap, status, metrics, history, pausing)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Tuple
from zoneinfo import ZoneInfo

import pytest

from bgjobs import JobRegistry
from bgjobs.local import LocalJobManager
from bgjobs.testing import DEFAULT_START, ManualClock, ManualJobManager

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# The plugin's fixtures (bgjobs.pytest_plugin), under this module's usual names.


@pytest.fixture
def clock(bgjobs_clock: ManualClock) -> ManualClock:
    return bgjobs_clock


@pytest.fixture
def manager(bgjobs_manager: ManualJobManager) -> ManualJobManager:
    return bgjobs_manager


def test_reminders_go_out_at_nine_in_paris(clock: ManualClock, manager: ManualJobManager) -> None:
    sent: List[datetime] = []
    manager.schedule_cron_job(
        "r", "R", lambda: sent.append(clock.now()), "0 9 * * *", timezone="Europe/Paris"
    )
    clock.set("2026-03-29T06:59:00Z")
    assert manager.get_job_status("r").next_run == utc(2026, 3, 29, 7)  # type: ignore[union-attr]
    assert clock.advance(60) == 1
    assert sent == [utc(2026, 3, 29, 7)]  # 09:00 CEST, the first day of summer time
    status = manager.get_job_status("r")
    assert status is not None
    assert (status.status, status.runs, status.last_run) == ("completed", 1, utc(2026, 3, 29, 7))
    assert status.next_run == utc(2026, 3, 30, 7)


@pytest.mark.parametrize(
    ("day", "hours", "fires"),
    [
        ("2026-03-29", 23, 92),  # spring forward: 02:00-02:45 do not exist, fire once at 03:00
        ("2026-10-25", 25, 100),  # fall back: the hour field is *, so 02:00-02:45 fire twice
        ("2026-06-01", 24, 96),
    ],
)
def test_a_day_of_a_quarter_hour_job_in_paris(day: str, hours: int, fires: int) -> None:
    midnight = datetime.fromisoformat(day).replace(tzinfo=PARIS)
    next_midnight = (midnight + timedelta(days=1)).replace(tzinfo=PARIS)
    clock = ManualClock(midnight - timedelta(seconds=1))
    ran: List[datetime] = []
    with ManualJobManager(clock, env={}) as manager:
        manager.schedule_cron_job(
            "q", "Q", lambda: ran.append(clock.now()), "*/15 * * * *", timezone="Europe/Paris"
        )
        started = time.perf_counter()
        assert clock.advance(next_midnight.timestamp() - midnight.timestamp()) == fires
        elapsed = time.perf_counter() - started
        assert manager.get_job_metrics().total_executions == fires
    assert next_midnight.timestamp() - midnight.timestamp() == hours * 3600
    assert len(ran) == len(set(ran)) == fires
    assert ran == sorted(ran)
    assert ran[0] == midnight and ran[-1] == next_midnight - timedelta(minutes=15)
    assert elapsed < 0.5, f"a day took {elapsed:.3f}s"


def test_due_fires_run_in_due_order_in_the_callers_thread(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    order: List[Tuple[str, datetime, int]] = []

    def job(name: str) -> None:
        order.append((name, clock.now(), threading.get_ident()))

    manager.schedule_job("every-40", "A", lambda: job("a"), 40)
    manager.schedule_job("every-30", "B", lambda: job("b"), 30)
    manager.schedule_cron_job("minutely", "C", lambda: job("c"), "* * * * *")
    assert clock.advance(120) == 3 + 4 + 2
    start = DEFAULT_START
    assert [(n, (t - start).total_seconds()) for n, t, _ in order] == [
        ("b", 30),
        ("a", 40),
        ("c", 60),  # b is due at 60 too, armed later: arming order breaks the tie
        ("b", 60),
        ("a", 80),
        ("b", 90),
        ("c", 120),  # all three due: armed at 60, 80 and 90, in that order
        ("a", 120),
        ("b", 120),
    ]
    assert {ident for _, _, ident in order} == {threading.get_ident()}
    assert clock.now() == start + timedelta(seconds=120)


def test_a_run_that_outlasts_its_interval_makes_fires_skip(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    def slow() -> None:
        clock.advance(90)  # the run lasts 90 s of the clock; the fire at +60 s finds it busy

    manager.schedule_job("slow", "Slow", slow, 60)
    clock.advance(60)
    status = manager.get_job_status("slow")
    assert status is not None
    assert (status.runs, status.skips, status.duration) == (1, 1, 90.0)
    assert manager.get_job_metrics().skipped_executions == 1
    (run,) = manager.get_job_runs("slow")
    assert (run.started, run.finished) == (DEFAULT_START + timedelta(seconds=60), clock.now())


def test_fires_missed_by_a_clock_step_are_coalesced_into_one_run(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    ran: List[datetime] = []
    manager.schedule_cron_job("m", "M", lambda: ran.append(clock.now()), "* * * * *")
    clock.step(600)  # like a resume from suspend: ten due times passed unseen
    assert clock.run_due() == 1
    assert ran == [DEFAULT_START + timedelta(seconds=600)]
    status = manager.get_job_status("m")
    assert status is not None
    assert (status.runs, status.skips) == (1, 9)
    assert status.next_run == DEFAULT_START + timedelta(seconds=660)
    assert clock.run_due() == 0


def test_failures_are_recorded_like_the_real_runtime(
    clock: ManualClock, manager: ManualJobManager, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("no database")

    manager.schedule_job("broken", "Broken", broken, 10)
    assert clock.advance(20) == 2  # a failing job keeps its schedule
    status = manager.get_job_status("broken")
    assert status is not None
    assert (status.status, status.failures, status.error) == (
        "failed",
        2,
        "RuntimeError: no database",
    )
    metrics = manager.get_job_metrics()
    assert (metrics.total_executions, metrics.failed_jobs) == (2, 2)
    runs = manager.get_job_runs("broken")
    assert [r.outcome for r in runs] == ["failed", "failed"]
    assert runs[0].scheduled_for == DEFAULT_START + timedelta(seconds=20)
    assert "no database" in caplog.text


def test_paused_jobs_do_not_run_until_resumed(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    ran: List[datetime] = []
    manager.schedule_job("p", "P", lambda: ran.append(clock.now()), 10)
    manager.pause_job("p")
    assert clock.advance(30) == 3  # the fires come; none runs
    assert ran == []
    assert manager.get_job_status("p").status == "paused"  # type: ignore[union-attr]
    manager.resume_job("p")
    clock.advance(10)
    assert ran == [DEFAULT_START + timedelta(seconds=40)]


def test_stopped_and_replaced_jobs(clock: ManualClock, manager: ManualJobManager) -> None:
    ran: List[str] = []
    manager.schedule_job("j", "J", lambda: ran.append("old"), 10)
    clock.advance(10)
    manager.schedule_job("j", "J", lambda: ran.append("new"), 25)
    clock.advance(30)
    assert ran == ["old", "new"]
    manager.stop_job("j")
    assert clock.advance(100) == 0
    assert manager.get_job_status("j").status == "stopped"  # type: ignore[union-attr]
    assert manager.trigger_job("j")  # a trigger runs in the caller's thread as ever
    assert ran == ["old", "new", "new"]


def test_set_replans_crons_and_keeps_an_intervals_pace(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    manager.schedule_cron_job("c", "C", lambda: None, "0 9 * * *")
    manager.schedule_job("i", "I", lambda: None, 3600)
    clock.advance(600)
    clock.set("2030-06-01T08:00:00Z")
    statuses = {s.id: s for s in manager.get_all_job_statuses()}
    assert statuses["c"].next_run == utc(2030, 6, 1, 9)
    assert statuses["i"].next_run == utc(2030, 6, 1, 8, 50)  # 50 min left, as before
    assert clock.advance(3600) == 2
    assert manager.get_job_metrics().skipped_executions == 0


def test_async_jobs_run_to_completion(clock: ManualClock, manager: ManualJobManager) -> None:
    done: List[bool] = []

    async def job() -> None:
        done.append(True)

    manager.schedule_job("a", "A", job, 5)
    clock.advance(5)
    assert done == [True]


def test_a_closed_manager_takes_no_more_fires(clock: ManualClock) -> None:
    manager = ManualJobManager(clock, env={})
    ran: List[int] = []
    manager.schedule_job("j", "J", lambda: ran.append(1), 1)
    manager.close()
    assert clock.advance(10) == 0
    assert ran == []
    assert clock._attached() == []


def test_two_managers_on_one_clock_run_in_due_order(clock: ManualClock) -> None:
    order: List[str] = []
    with ManualJobManager(clock, env={}) as one, ManualJobManager(clock, env={}) as two:
        one.schedule_job("a", "A", lambda: order.append("one"), 20)
        two.schedule_job("a", "A", lambda: order.append("two"), 15)
        clock.advance(45)
        assert one.run_due() == two.run_due() == 0
    assert order == ["two", "one", "two", "one", "two"]


def test_memory_only_unless_a_state_dir_is_given(tmp_path: Path) -> None:
    env = {"BGJOBS_STATE_DIR": str(tmp_path / "state"), "BGJOBS_TIMEZONE": "Europe/Paris"}
    with ManualJobManager(env=env) as manager:
        assert manager.state_dir is None and manager.store is None
        manager.schedule_cron_job("c", "C", lambda: None, "0 9 * * *")
        assert manager.get_job_status("c").next_run == utc(2026, 1, 1, 8)  # type: ignore[union-attr]
    with ManualJobManager(env={}, state_dir=tmp_path / "mine") as manager:
        assert manager.state_dir == str(tmp_path / "mine")
        manager.schedule_job("i", "I", lambda: None, 10)
        assert manager.clock.advance(10) == 1
        assert manager.get_job_runs("i")[0].outcome == "completed"


def test_load_schedules_a_registry_or_an_app(tmp_path: Path, clock: ManualClock) -> None:
    registry = JobRegistry()
    ran: List[str] = []

    @registry.interval("beat", "Beat", minutes=5)
    def beat() -> None:
        ran.append("beat")

    app = tmp_path / "appmod_for_load.py"
    app.write_text(
        "from bgjobs import JobRegistry\n"
        "jobs = JobRegistry()\n"
        "calls = []\n"
        "@jobs.cron('daily', 'Daily', '0 6 * * *')\n"
        "def daily():\n"
        "    calls.append(1)\n"
    )
    with ManualJobManager(clock, env={}) as manager:
        assert manager.load(registry) is registry
        loaded = manager.load(str(app))
        assert [d.id for d in loaded] == ["daily"]
        clock.advance(timedelta(hours=6))
    assert ran == ["beat"] * 72
    daily = loaded.get("daily")
    assert daily is not None
    assert daily.func.__globals__["calls"] == [1]


def test_the_clock_takes_iso_strings_datetimes_and_epochs() -> None:
    assert ManualClock("2026-03-29T06:59:00Z").now() == utc(2026, 3, 29, 6, 59)
    assert ManualClock(datetime(2026, 3, 29, 8, 59)).now() == utc(2026, 3, 29, 8, 59)  # naive: UTC
    assert ManualClock(0).now() == utc(1970, 1, 1)
    with pytest.raises(ValueError, match="not an ISO 8601 time: 'tomorrow'"):
        ManualClock("tomorrow")
    with pytest.raises(ValueError, match="only moves forward"):
        ManualClock().advance(-1)
    with pytest.raises(TypeError, match=r"needs a bgjobs\.testing\.ManualClock"):
        ManualJobManager(object())  # type: ignore[arg-type]


def test_a_thread_based_manager_still_follows_the_clock() -> None:
    clock = ManualClock()
    ran = threading.Event()
    with LocalJobManager(clock=clock, env={}) as manager:
        manager.schedule_job("t", "T", ran.set, 60)
        assert clock.advance(60) == 0  # not a manual manager: its own threads run the fire
        assert ran.wait(5)


# --- per-job policies: the real runtime's, through the shared core ---------------------------


def test_retries_wait_their_backoff_on_the_manual_clock(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    attempts: List[datetime] = []

    def flaky() -> None:
        attempts.append(clock.now())
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    manager.schedule_job("flaky", "Flaky", flaky, 3600, retries=2, retry_backoff=10)
    assert clock.advance(3600) == 1
    assert len(attempts) == 1  # the retry waits for its backoff, a timer on the clock
    clock.advance(60)
    assert len(attempts) == 3
    first = DEFAULT_START + timedelta(seconds=3600)
    assert attempts[0] == first < attempts[1] < attempts[2] <= first + timedelta(seconds=60)
    runs = manager.get_job_runs("flaky")
    assert [(r.attempt, r.outcome) for r in reversed(runs)] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert clock.now() >= attempts[2]


def test_a_timeout_passes_exactly_when_the_clock_passes_it(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    from bgjobs import current_run

    seen: List[Tuple[float, bool]] = []
    events: List[Tuple[str, datetime]] = []

    def slow() -> None:
        run = current_run()
        assert run is not None
        clock.advance(29)
        seen.append((29, run.cancelled.is_set()))
        clock.advance(1)
        seen.append((30, run.cancelled.is_set()))  # set by now, in this thread: no race

    manager.add_listener(
        lambda run, event: events.append((event, clock.now())), events=("timed_out",)
    )
    manager.schedule_job("slow", "Slow", slow, 100, timeout=30)
    assert clock.advance(100) == 1  # the deadline is not counted as a fire
    assert seen == [(29, False), (30, True)]
    assert events == [("timed_out", DEFAULT_START + timedelta(seconds=130))]
    (run,) = manager.get_job_runs("slow")
    assert (run.outcome, run.duration) == ("timed_out", 30.0)


def test_listeners_are_called_before_advance_returns(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    events: List[Tuple[str, str]] = []
    manager.add_listener(
        lambda run, event: events.append((event, run.job_id)), events=("completed", "skipped")
    )
    manager.schedule_job("j", "J", lambda: None, 10)
    clock.advance(10)
    assert events == [("completed", "j")]


def test_misfire_grace_and_jitter_follow_the_real_rules(
    clock: ManualClock, manager: ManualJobManager
) -> None:
    ran: List[Tuple[str, datetime]] = []
    manager.schedule_cron_job(
        "graceful", "G", lambda: ran.append(("g", clock.now())), "* * * * *", misfire_grace=5
    )
    clock.step(90)  # the fire due at 00:01 is 30 s late: past its grace, it does not run
    assert clock.run_due() == 1
    assert ran == []
    assert manager.get_job_status("graceful").skips == 1  # type: ignore[union-attr]

    manager.schedule_job("spread", "S", lambda: ran.append(("s", clock.now())), 60, jitter=10)
    planned = manager.get_job_status("spread").next_run  # type: ignore[union-attr]
    assert planned is not None
    start = clock.now()
    assert start + timedelta(seconds=60) <= planned <= start + timedelta(seconds=70)
    clock.advance(70)
    (fired,) = [when for name, when in ran if name == "s"]
    assert abs(fired - planned) < timedelta(milliseconds=1)  # next_run is to the millisecond
