"""Cron and interval maths: pure functions with explicit times, plus managers on a fake clock.

No test here waits for a real calendar time: schedules are asked about explicit instants,
and the managers get an injected clock (fixed, or real time shifted to just before an
interesting instant, so that a real timer fires a fraction of a second later).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import pytest
from freezegun import freeze_time
from support_clock import ManualClock, caught_up

from bgjobs.local import LocalJobManager
from bgjobs.schedules import (
    CronSchedule,
    IntervalSchedule,
    format_seconds,
    parse_cron,
    resolve_timezone,
)

UTC = timezone.utc
PARIS = resolve_timezone("tz", "Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def cron(expression: str, tz: str = "UTC") -> CronSchedule:
    return parse_cron("test-job", expression, resolve_timezone("test-job", tz))


def fires(schedule: CronSchedule, after: datetime, count: int) -> List[datetime]:
    out: List[datetime] = []
    for _ in range(count):
        after = schedule.next_fire(after)
        out.append(after)
    return out


# --- next fire times ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "tz", "after", "expected"),
    [
        pytest.param(
            "0 9 * * *",
            "UTC",
            utc(2026, 1, 1, 8, 59, 59),
            utc(2026, 1, 1, 9),
            id="daily-9am-later-today",
        ),
        pytest.param(
            "0 9 * * *",
            "UTC",
            utc(2026, 1, 1, 9),
            utc(2026, 1, 2, 9),
            id="daily-9am-strictly-after-a-fire-time",
        ),
        pytest.param(
            "0 9 * * *",
            "UTC",
            utc(2026, 1, 1, 9, 0, 1),
            utc(2026, 1, 2, 9),
            id="daily-9am-just-missed",
        ),
        pytest.param(
            "0 0 * * *",
            "UTC",
            utc(2026, 1, 31, 12),
            utc(2026, 2, 1),
            id="midnight-across-month-end",
        ),
        pytest.param(
            "0 0 * * *",
            "UTC",
            utc(2026, 12, 31, 23, 59, 59),
            utc(2027, 1, 1),
            id="midnight-across-year-end",
        ),
        pytest.param(
            "*/30 * * * * *",
            "UTC",
            utc(2026, 1, 1, 0, 0, 10),
            utc(2026, 1, 1, 0, 0, 30),
            id="six-fields-seconds-first",
        ),
        pytest.param(
            "*/30 * * * * *",
            "UTC",
            utc(2026, 1, 1, 0, 0, 30),
            utc(2026, 1, 1, 0, 1, 0),
            id="six-fields-next-minute",
        ),
        pytest.param(
            "15 0 9 * * *",
            "UTC",
            utc(2026, 1, 1, 8),
            utc(2026, 1, 1, 9, 0, 15),
            id="six-fields-second-15-of-9am",
        ),
        pytest.param(
            "@hourly", "UTC", utc(2026, 1, 1, 10, 15), utc(2026, 1, 1, 11), id="alias-hourly"
        ),
        pytest.param("@daily", "UTC", utc(2026, 1, 1, 10), utc(2026, 1, 2), id="alias-daily"),
        pytest.param("@weekly", "UTC", utc(2026, 1, 1), utc(2026, 1, 4), id="alias-weekly-sunday"),
        pytest.param("@monthly", "UTC", utc(2026, 1, 15), utc(2026, 2, 1), id="alias-monthly"),
        pytest.param("@yearly", "UTC", utc(2026, 1, 15), utc(2027, 1, 1), id="alias-yearly"),
        pytest.param(
            "0 9 * * 1-5",
            "UTC",
            utc(2026, 1, 2, 10),
            utc(2026, 1, 5, 9),
            id="weekdays-skip-the-weekend",
        ),
        pytest.param(
            "0 9 * * *",
            "Europe/Paris",
            utc(2026, 1, 10),
            utc(2026, 1, 10, 8),
            id="paris-9am-in-winter-is-8-utc",
        ),
        pytest.param(
            "0 9 * * *",
            "Europe/Paris",
            utc(2026, 7, 10),
            utc(2026, 7, 10, 7),
            id="paris-9am-in-summer-is-7-utc",
        ),
        pytest.param(
            "0 9 * * *",
            "America/New_York",
            utc(2026, 1, 10),
            utc(2026, 1, 10, 14),
            id="new-york-9am-in-winter",
        ),
    ],
)
def test_next_fire_time(expression: str, tz: str, after: datetime, expected: datetime) -> None:
    got = cron(expression, tz).next_fire(after)
    assert got == expected
    assert got.utcoffset() == timedelta(0)  # always an aware UTC datetime


def test_next_fire_accepts_an_aware_non_utc_datetime() -> None:
    after = datetime(2026, 1, 1, 9, 30, tzinfo=PARIS)  # 08:30 UTC
    assert cron("0 9 * * *").next_fire(after) == utc(2026, 1, 1, 9)


# --- Europe/Paris across the DST changes of 2026 ------------------------------------------
# Spring forward: 2026-03-29 02:00 CET (01:00 UTC) -> 03:00 CEST; 02:xx does not exist.
# Fall back: 2026-10-25 03:00 CEST (01:00 UTC) -> 02:00 CET; 02:xx happens twice.


def test_daily_job_in_the_skipped_hour_runs_once_at_the_transition_instant() -> None:
    got = fires(cron("30 2 * * *", "Europe/Paris"), utc(2026, 3, 27, 12), 4)
    assert got == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: the transition instant, once
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]


def test_daily_job_in_the_repeated_hour_runs_once_at_the_first_occurrence() -> None:
    got = fires(cron("30 2 * * *", "Europe/Paris"), utc(2026, 10, 23, 12), 4)
    assert got == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # first 02:30 (CEST); the second one (01:30 UTC) is not used
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
        utc(2026, 10, 27, 1, 30),
    ]


def test_daily_job_asked_between_the_two_occurrences_waits_for_tomorrow() -> None:
    schedule = cron("30 2 * * *", "Europe/Paris")
    assert schedule.next_fire(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)
    assert schedule.next_fire(utc(2026, 10, 25, 1, 0)) == utc(2026, 10, 26, 1, 30)


def test_hourly_job_runs_every_real_hour_through_the_repeated_hour() -> None:
    got = fires(cron("0 * * * *", "Europe/Paris"), utc(2026, 10, 24, 21, 30), 8)
    assert got == [utc(2026, 10, 24, 22) + timedelta(hours=k) for k in range(8)]
    local = [(t.astimezone(PARIS).hour, t.astimezone(PARIS).fold) for t in got]
    assert (2, 0) in local and (2, 1) in local  # both occurrences of 02:00
    assert len(set(got)) == len(got)  # never twice at the same instant


def test_hourly_job_runs_every_real_hour_through_the_skipped_hour() -> None:
    got = fires(cron("@hourly", "Europe/Paris"), utc(2026, 3, 28, 21, 30), 8)
    assert got == [utc(2026, 3, 28, 22) + timedelta(hours=k) for k in range(8)]
    assert 2 not in [t.astimezone(PARIS).hour for t in got]


def test_half_hourly_job_keeps_its_rhythm_through_the_repeated_hour() -> None:
    got = fires(cron("*/30 * * * *", "Europe/Paris"), utc(2026, 10, 24, 23, 45), 8)
    assert got == [utc(2026, 10, 25, 0) + timedelta(minutes=30 * k) for k in range(8)]


def test_seconds_cron_has_no_duplicate_instants_around_spring_forward() -> None:
    got = fires(cron("*/30 * * * * *", "Europe/Paris"), utc(2026, 3, 29, 0, 59), 6)
    assert got == [
        utc(2026, 3, 29, 0, 59, 30),
        utc(2026, 3, 29, 1, 0, 0),
        utc(2026, 3, 29, 1, 0, 30),
        utc(2026, 3, 29, 1, 1, 0),
        utc(2026, 3, 29, 1, 1, 30),
        utc(2026, 3, 29, 1, 2, 0),
    ]


def test_leap_day_cron_is_valid_in_a_year_without_one() -> None:
    # Validation asks for a fire time after "now": the next 29 February is a year away.
    with freeze_time("2027-03-01T12:00:00Z"):
        schedule = cron("0 0 29 2 *")
        assert schedule.next_fire(datetime.now(UTC)) == utc(2028, 2, 29)


# --- first_due / next_due -------------------------------------------------------------------


def test_cron_first_due_is_the_next_fire_time_as_epoch_seconds() -> None:
    schedule = cron("0 9 * * *")
    assert schedule.wall_clock is True
    assert schedule.first_due(utc(2026, 1, 1, 8, 59).timestamp()) == utc(2026, 1, 1, 9).timestamp()


def test_cron_next_due_without_delay_misses_nothing() -> None:
    schedule = cron("0 9 * * *")
    due = utc(2026, 1, 1, 9).timestamp()
    assert schedule.next_due(due, due + 0.5) == (utc(2026, 1, 2, 9).timestamp(), 0)


def test_cron_next_due_after_a_long_pause_skips_to_the_future_and_counts_missed() -> None:
    schedule = cron("0 9 * * *")
    due = utc(2026, 1, 1, 9).timestamp()
    now = utc(2026, 1, 4, 10).timestamp()  # the fires of Jan 2, 3 and 4 were missed
    assert schedule.next_due(due, now) == (utc(2026, 1, 5, 9).timestamp(), 3)


def test_interval_first_due_is_one_interval_after_now() -> None:
    schedule = IntervalSchedule(10.0)
    assert schedule.wall_clock is False
    assert schedule.first_due(100.0) == 110.0


@pytest.mark.parametrize(
    ("previous_due", "now", "expected"),
    [
        pytest.param(110.0, 110.001, (120.0, 0), id="on-time"),
        pytest.param(110.0, 105.0, (120.0, 0), id="timer-fired-early"),
        pytest.param(110.0, 119.999, (120.0, 0), id="late-but-before-next-tick"),
        pytest.param(110.0, 120.0, (130.0, 1), id="exactly-one-tick-late"),
        pytest.param(110.0, 145.0, (150.0, 3), id="overran-three-ticks"),
        pytest.param(110.0, 150.0, (160.0, 4), id="now-exactly-on-a-tick"),
    ],
)
def test_interval_next_due_coalesces_missed_ticks_and_counts_them(
    previous_due: float, now: float, expected: tuple
) -> None:
    assert IntervalSchedule(10.0).next_due(previous_due, now) == expected


def test_interval_next_due_stays_on_the_grid_without_float_accumulation() -> None:
    schedule = IntervalSchedule(0.1)
    nxt, missed = schedule.next_due(0.0, 99.95)
    assert missed == 999
    assert nxt == pytest.approx(100.0, abs=1e-9)
    due = 0.0
    for _ in range(1000):  # chaining on-time ticks lands on the grid too
        due, missed = schedule.next_due(due, due)
        assert missed == 0
    assert due == pytest.approx(100.0, abs=1e-9)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (5400, "1h30m"), (0.25, "0.25s"), (86400, "1d"), (45, "45s"), (90, "1m30s")],
)
def test_interval_description_is_human_readable(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text
    assert IntervalSchedule(seconds).description == f"every {text}"


def test_cron_description_names_expression_and_timezone() -> None:
    assert cron("0 9 * * *", "Europe/Paris").description == "cron 0 9 * * * (Europe/Paris)"
    assert cron("@hourly").description == "cron 0 * * * * (UTC)"


# --- timezones ----------------------------------------------------------------------------


def test_timezone_defaults_to_utc_then_bgjobs_timezone() -> None:
    assert resolve_timezone("j", None, None).utcoffset(None) == timedelta(0)
    assert resolve_timezone("j", None, "").utcoffset(None) == timedelta(0)
    paris = resolve_timezone("j", None, "Europe/Paris")
    assert utc(2026, 1, 1).astimezone(paris).utcoffset() == timedelta(hours=1)
    # An explicit timezone wins over BGJOBS_TIMEZONE.
    explicit = resolve_timezone("j", "America/New_York", "Europe/Paris")
    assert utc(2026, 1, 1).astimezone(explicit).utcoffset() == timedelta(hours=-5)


def test_timezone_accepts_a_tzinfo_object() -> None:
    fixed = timezone(timedelta(hours=3))
    assert resolve_timezone("j", fixed) is fixed
    schedule = parse_cron("j", "0 9 * * *", fixed)
    assert schedule.next_fire(utc(2026, 1, 1)) == utc(2026, 1, 1, 6)


# --- managers on an injected clock ----------------------------------------------------------


@pytest.fixture
def stop_later():
    managers: List[LocalJobManager] = []
    yield managers.append
    for m in managers:
        m.stop_all_jobs(wait=True, timeout=5)


def test_manager_on_a_fake_clock_shows_cron_next_run(stop_later) -> None:
    m = LocalJobManager(clock=ManualClock(utc(2026, 3, 28, 12).timestamp()), env={})
    stop_later(m)
    m.schedule_cron_job(
        "paris-0230", "Paris 02:30", lambda: None, "30 2 * * *", timezone="Europe/Paris"
    )
    m.schedule_cron_job("utc-9", "UTC 9am", lambda: None, "0 9 * * *")
    m.schedule_cron_job("every-30s", "Every 30 s", lambda: None, "*/30 * * * * *")
    m.schedule_cron_job("hourly", "Hourly", lambda: None, "@hourly")
    m.schedule_job("every-hour", "Every hour", lambda: None, 3600)
    next_runs = {s.id: s.next_run for s in m.get_all_job_statuses()}
    assert next_runs == {
        "paris-0230": utc(2026, 3, 29, 1, 0),  # the spring-forward transition instant
        "utc-9": utc(2026, 3, 29, 9),
        "every-30s": utc(2026, 3, 28, 12, 0, 30),
        "hourly": utc(2026, 3, 28, 13),
        "every-hour": utc(2026, 3, 28, 13),
    }
    assert all(s.status == "scheduled" and s.last_run is None for s in m.get_all_job_statuses())


def test_manager_default_timezone_comes_from_bgjobs_timezone(stop_later) -> None:
    clock = ManualClock(utc(2026, 3, 28, 12).timestamp())
    paris = LocalJobManager(clock=clock, env={"BGJOBS_TIMEZONE": "Europe/Paris"})
    plain = LocalJobManager(clock=clock, env={})
    stop_later(paris)
    stop_later(plain)
    for m in (paris, plain):
        m.schedule_cron_job("report", "Report", lambda: None, "0 9 * * *")
    paris_status = paris.get_job_status("report")
    plain_status = plain.get_job_status("report")
    assert paris_status is not None and plain_status is not None
    assert paris_status.next_run == utc(2026, 3, 29, 7)  # 09:00 CEST, after the DST change
    assert "Europe/Paris" in paris_status.schedule
    assert plain_status.next_run == utc(2026, 3, 29, 9)
    assert "UTC" in plain_status.schedule


def _run_once_at(at: datetime, expression: str, tz: Optional[str], stop_later):
    """Schedule a cron job on a manual clock set a moment before ``at``, move the clock to
    ``at``; return the job's status once it ran."""
    clock = ManualClock(at.timestamp() - 0.25)
    m = LocalJobManager(clock=clock, env={}, max_workers=1)
    stop_later(m)
    ran = threading.Event()
    m.schedule_cron_job("dst", "DST job", ran.set, expression, timezone=tz)
    status = m.get_job_status("dst")
    assert status is not None and status.next_run == at
    clock.advance(0.125)
    caught_up(m._timers, clock)
    assert not ran.is_set()
    clock.advance(0.125)
    assert ran.wait(5), f"the job due at {at} never ran"
    caught_up(m._timers, clock)  # the run is over
    status = m.get_job_status("dst")
    assert status is not None
    assert status.status == "completed"
    assert status.runs == 1
    assert status.last_run == at
    return status


@pytest.mark.parametrize(
    ("at", "expression", "expected_next"),
    [
        pytest.param(
            utc(2026, 3, 29, 1),
            "30 2 * * *",
            utc(2026, 3, 30, 0, 30),
            id="spring-daily-0230-fires-at-transition-then-tomorrow",
        ),
        pytest.param(
            utc(2026, 10, 25, 0, 30),
            "30 2 * * *",
            utc(2026, 10, 26, 1, 30),
            id="fall-daily-0230-fires-once-not-again-an-hour-later",
        ),
        pytest.param(
            utc(2026, 10, 25, 0),
            "0 * * * *",
            utc(2026, 10, 25, 1),
            id="fall-hourly-first-0200-then-second-0200",
        ),
        pytest.param(
            utc(2026, 10, 25, 1),
            "0 * * * *",
            utc(2026, 10, 25, 2),
            id="fall-hourly-second-0200-then-0300",
        ),
        pytest.param(
            utc(2026, 3, 29, 0),
            "0 * * * *",
            utc(2026, 3, 29, 1),
            id="spring-hourly-0100-then-0300-an-hour-later",
        ),
    ],
)
def test_local_manager_runs_cron_across_dst_on_a_shifted_clock(
    at: datetime, expression: str, expected_next: datetime, stop_later
) -> None:
    status = _run_once_at(at, expression, "Europe/Paris", stop_later)
    assert status.next_run == expected_next
