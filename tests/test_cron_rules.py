"""Cron read as cronie reads it (README, "Cron rules"): issue 12's wrong fires and vague
messages, each pinned by its minimal reproduction."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import List

import pytest

from bgjobs import InvalidScheduleError
from bgjobs.schedules import CronSchedule, parse_cron, resolve_timezone

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def cron(expression: str, tz: str = "UTC") -> CronSchedule:
    return parse_cron("job", expression, resolve_timezone("job", tz))


def fires(schedule: CronSchedule, after: datetime, count: int) -> List[datetime]:
    out = []
    for _ in range(count):
        after = schedule.next_fire(after)
        out.append(after)
    return out


# --- 1. N-N is the one value N -----------------------------------------------------------


def test_a_one_value_range_is_that_value_alone() -> None:
    assert fires(cron("0 9-9 * * *"), utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 9),
        utc(2026, 1, 2, 9),
    ]
    assert fires(cron("0 0 1-1 * *"), utc(2026, 1, 1), 2) == [utc(2026, 2, 1), utc(2026, 3, 1)]


# --- 2. a day field starting with '*' ANDs the two day fields ----------------------------


def test_a_star_step_day_field_is_anded_with_the_weekday() -> None:
    # Odd days that are Mondays: Jan 5, 19, Feb 9 (cron ORs only when neither field starts
    # with '*').
    assert fires(cron("0 0 */2 * 1"), utc(2026, 1, 1), 3) == [
        utc(2026, 1, 5),
        utc(2026, 1, 19),
        utc(2026, 2, 9),
    ]


def test_two_restricted_day_fields_are_ored() -> None:
    # The 13th or any Friday: Jan 2, 9, 13, 16.
    assert fires(cron("0 0 13 * 5"), utc(2026, 1, 1), 4) == [
        utc(2026, 1, 2),
        utc(2026, 1, 9),
        utc(2026, 1, 13),
        utc(2026, 1, 16),
    ]


# --- 3., 4., 11. what is refused, and how the message reads ------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 22-2 * * *", "hour field '22-2': the range 22-2 is reversed.*write 22-23,0-2"),
        ("5-1 * * * *", "minute field '5-1': .*reversed.*write 5-59,0-1"),
        ("0 0 L * *", "day-of-month field 'L': 'L' \\(last\\) is not cron syntax"),
        ("0 0 * * 5L", "day-of-week field '5L': 'L' \\(last\\) is not cron syntax"),
        ("0 0 13 * 5#2", "day-of-week field '5#2': '#' \\(nth weekday\\)"),
        ("0 0 15W * *", "day-of-month field '15W': 'W'"),
        ("0 0 ? * 1", "day-of-month field '\\?': '\\?' \\(no value\\)"),
        ("60 * * * *", "minute field '60': '60' is out of range; values are 0-59"),
        ("0 24 * * *", "hour field '24': '24' is out of range; values are 0-23"),
        ("0 0 * 13 *", "month field '13': .*values are 1-12 or jan-dec"),
        ("0 0 * * 8", "day-of-week field '8': .*values are 0-7 or sun-sat"),
        ("0\u00a09 * * *", "U\\+00A0 \\(no-break space\\) at position 1"),
        ("*/99999999999999999999 * * * *", "step '9999.*' is larger than the range 0-59"),
        ("*/0 * * * *", "a step must be at least 1"),
        ("5/15 * * * *", "a step needs a range\\); write 5-59/15"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 * * * * *", "7 fields"),
        ("@reboot", "unknown cron alias '@reboot'"),
        ("0 0 * * mon-", "not a value, range"),
        ("0 0 * jul- *", "month field 'jul-': 'jul-' is not a value, range"),
        ("0 0 * * WED#2", "'#' \\(nth weekday\\)"),
        ("0 9 * * ~", "random pick"),
        ("1,,2 * * * *", "an empty list item"),
    ],
)
def test_a_bad_expression_names_the_field_its_values_and_the_token(
    expression: str, message: str
) -> None:
    pattern = f"job 'job': invalid cron expression .*{message}"
    with pytest.raises(InvalidScheduleError, match=pattern):
        cron(expression)


@pytest.mark.parametrize(
    ("expression", "same_as"),
    [
        ("0 0 * JAN MON", "0 0 * 1 1"),
        ("0 0 * * 7", "0 0 * * 0"),
        ("0 0 * * fri-sun", "0 0 * * 5,6,0"),
        ("0 0 * * 5-0", "0 0 * * 5-7"),
        ("00 09 * * *", "0 9 * * *"),
        ("0\t9  * * *", "0 9 * * *"),
        ("*/30 * * * *", "0,30 * * * *"),
        ("0-10/5 * * * *", "0,5,10 * * * *"),
    ],
)
def test_accepted_spellings_fire_like_their_plain_form(expression: str, same_as: str) -> None:
    start = utc(2026, 1, 1)
    assert fires(cron(expression), start, 6) == fires(cron(same_as), start, 6)


# --- 5. DST: wildcard jobs (minute or hour starts with '*') follow real time -------------


def test_a_wildcard_job_does_not_fire_for_skipped_wall_times() -> None:
    # Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z; 02:30 does not exist.
    assert fires(cron("30 * * * *", "Europe/Paris"), utc(2026, 3, 29, 0), 2) == [
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1, 30),
    ]
    # Lord Howe, 2026-10-04: 02:00 (+10:30) jumps to 02:30 (+11) at 15:30Z; @hourly has no
    # 02:00 that day, and nothing at the jump: 01:00 (14:30Z), then 03:00 (16:00Z).
    assert fires(cron("@hourly", "Australia/Lord_Howe"), utc(2026, 10, 3, 14, 20), 3) == [
        utc(2026, 10, 3, 14, 30),
        utc(2026, 10, 3, 16),
        utc(2026, 10, 3, 17),
    ]


def test_a_wildcard_job_that_matches_only_skipped_wall_times_is_refused() -> None:
    # The last Sunday of March (a weekday field starting with "*" ANDs), hour 2: the hour
    # Paris skips, every year.
    with pytest.raises(InvalidScheduleError, match=r"job 'job': .* never fires in Europe/Paris"):
        cron("* 2 25-31 3 */7", "Europe/Paris")
    assert cron("* 2 25-31 3 */7", "UTC").next_fire(utc(2026, 1, 1)) == utc(2026, 3, 29, 2)
    # A fixed-time job runs it at the jump instead.
    fixed = cron("30 2 25-31 3 */7", "Europe/Paris")
    assert fixed.next_fire(utc(2026, 1, 1)) == utc(2026, 3, 29, 1)


def test_a_fixed_time_job_fires_a_skipped_time_once_at_the_jump() -> None:
    assert cron("30 2 * * *", "Europe/Paris").next_fire(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert cron("0 2 * * *", "Australia/Lord_Howe").next_fire(utc(2026, 10, 3, 12)) == utc(
        2026, 10, 3, 15, 30
    )


def test_a_wildcard_job_fires_in_both_passes_of_a_repeated_hour() -> None:
    # Paris, 2026-10-25: 03:00 CEST goes back to 02:00 CET at 01:00Z; 02:00 occurs twice.
    assert fires(cron("0 */2 * * *", "Europe/Paris"), utc(2026, 10, 24, 23, 30), 3) == [
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 3),
    ]


def test_a_fixed_time_job_fires_a_repeated_time_once() -> None:
    assert fires(cron("30 2 * * *", "Europe/Paris"), utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


# --- 8. missed fires are counted exactly, not enumerated ---------------------------------


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
)
@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "*/7 * * * *",
        "30 2 * * *",
        "0 */2 * * *",
        "30 * * * *",
        "0,30 1-3 * * *",
        "*/20 * * * * *",
        "0 30 2 * * *",
        "0 0 */2 * 1",
    ],
)
def test_count_fires_equals_the_fires_enumerated_across_dst_changes(
    expression: str, zone: str
) -> None:
    schedule = cron(expression, zone)
    rng = random.Random(f"{expression} {zone}")
    changes = [
        utc(2026, 3, 8, 7),
        utc(2026, 3, 29, 1),
        utc(2026, 4, 4, 15),
        utc(2026, 4, 5, 3),
        utc(2026, 9, 6, 4),
        utc(2026, 10, 3, 15, 30),
        utc(2026, 10, 25, 1),
        utc(2026, 11, 1, 6),
    ]
    for change in changes:
        for _ in range(3):
            start = change - timedelta(seconds=rng.randrange(0, 4 * 3600))
            stop = change + timedelta(seconds=rng.randrange(0, 4 * 3600))
            enumerated, fire = 0, schedule.next_fire(start - timedelta(microseconds=1))
            while fire < stop:
                enumerated += 1
                fire = schedule.next_fire(fire)
            assert schedule.count_fires(start, stop) == enumerated, (start, stop)


def test_a_days_pause_of_an_every_second_cron_counts_every_missed_fire() -> None:
    schedule = cron("* * * * * *")
    due = utc(2026, 1, 1).timestamp()
    nxt, missed = schedule.next_due(due, due + 86400)
    assert (nxt, missed) == (due + 86401, 86400)


def test_a_registry_refuses_what_cron_would_refuse_at_declaration() -> None:
    from bgjobs import JobRegistry

    jobs = JobRegistry()
    with pytest.raises(InvalidScheduleError, match=r"job 'odd'.*'L' \(last\) is not cron syntax"):
        jobs.add_cron("odd", "Odd", lambda: None, "0 9 L * *")
    assert "odd" not in jobs
