"""Cron expressions read as cronie reads them, and the local wall times they match.

cronie (the Vixie cron of most Linux hosts, ``src/entry.c``) is the reference; its rules
are listed once, in the README's "Cron rules". Briefly: a field is a comma-separated list
of ``*``, ``*/step``, ``N``, ``N-M`` and ``N-M/step``; months and weekdays also take
three-letter names; weekday ``0`` and ``7`` are Sunday. The two day fields are combined
with AND when either *starts with* ``*`` and with OR otherwise. A job whose minute or
hour field starts with ``*`` is a *wildcard* job, which matters only at DST changes (see
:mod:`bgjobs.schedules`). Everything here works on naive local wall times; no timezone.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from bisect import bisect_left
from datetime import date, datetime, timedelta
from typing import FrozenSet, List, NamedTuple, Optional, Sequence, Set, Tuple

__all__ = ["CRON_ALIASES", "CronSpec", "CronSyntaxError", "count_matches", "next_match", "parse"]

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The ``@`` aliases, and the 5-field expression each stands for (as in cronie)."""

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class _Field(NamedTuple):
    name: str
    low: int
    high: int
    names: Tuple[str, ...]  # names[i] stands for low + i


_SECOND = _Field("second", 0, 59, ())
_MINUTE = _Field("minute", 0, 59, ())
_HOUR = _Field("hour", 0, 23, ())
_DAY = _Field("day-of-month", 1, 31, ())
_MONTH = _Field("month", 1, 12, _MONTHS)
_WEEKDAY = _Field("day-of-week", 0, 7, _WEEKDAYS)

_ITEM = re.compile(r"(\*|[0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?(?:/([0-9A-Za-z]+))?")
_FOREIGN = {
    "L": "'L' (last)",
    "W": "'W' (weekday nearest)",
    "#": "'#' (nth weekday)",
    "?": "'?' (no value)",
}


class CronSyntaxError(ValueError):
    """A cron expression cron would not accept; the message names the field and token."""


class CronSpec(NamedTuple):
    """A parsed expression: each field's values (sorted), and cronie's two flags."""

    seconds: Tuple[int, ...]  # (0,) for a 5-field expression
    minutes: Tuple[int, ...]
    hours: Tuple[int, ...]
    days: FrozenSet[int]
    day_list: Tuple[int, ...]  # days, sorted
    months: Tuple[int, ...]
    weekdays: FrozenSet[int]  # 0 = Sunday .. 6
    day_and: bool  # a day field starts with '*': a day must match both fields
    wildcard: bool  # the minute or hour field starts with '*'
    has_seconds: bool

    def day_matches(self, day: date) -> bool:
        """Whether ``day`` is one of the expression's days (month included)."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        return (dom and dow) if self.day_and else (dom or dow)


def parse(expression: str) -> CronSpec:
    """Parse a 5-field expression, a 6-field one with seconds first, or an alias.

    Raises :class:`CronSyntaxError` naming the field, its allowed values and the bad token.
    """
    for position, char in enumerate(expression):
        if char in " \t" or (char.isascii() and char.isprintable()):
            continue
        described = unicodedata.name(char, "a control character")
        raise CronSyntaxError(
            f"character U+{ord(char):04X} ({described.lower()}) at position {position}; "
            "separate the fields with ASCII spaces or tabs"
        )
    text = expression.strip(" \t")
    if text.startswith("@"):
        alias = CRON_ALIASES.get(text.lower())
        if alias is None:
            raise CronSyntaxError(
                f"unknown cron alias {text!r}; use one of {', '.join(CRON_ALIASES)}"
            )
        text = alias
    fields = re.split(r"[ \t]+", text)
    if len(fields) not in (5, 6):
        raise CronSyntaxError(
            f"{len(fields)} fields; use 5 ('minute hour day-of-month month day-of-week'), "
            "6 with seconds first, or an alias like @hourly"
        )
    has_seconds = len(fields) == 6
    seconds = _parse_field(fields[0], _SECOND) if has_seconds else (0,)
    minute, hour, day, month, weekday = fields[1:] if has_seconds else fields
    weekdays = frozenset(value % 7 for value in _parse_field(weekday, _WEEKDAY))
    days = _parse_field(day, _DAY)
    spec = CronSpec(
        seconds=tuple(seconds),
        minutes=tuple(_parse_field(minute, _MINUTE)),
        hours=tuple(_parse_field(hour, _HOUR)),
        days=frozenset(days),
        day_list=tuple(days),
        months=tuple(_parse_field(month, _MONTH)),
        weekdays=weekdays,
        day_and=day.startswith("*") or weekday.startswith("*"),
        wildcard=minute.startswith("*") or hour.startswith("*"),
        has_seconds=has_seconds,
    )
    if spec.day_and and not any(
        d <= calendar.monthrange(2000, m)[1] for m in spec.months for d in spec.days
    ):
        raise CronSyntaxError(
            f"no month of {month!r} has a day {day!r}: the expression never fires"
        )
    return spec


def _parse_field(token: str, field: _Field) -> List[int]:
    values: Set[int] = set()
    for item in token.split(","):
        values.update(_parse_item(item, token, field))
    return sorted(values)


def _parse_item(item: str, token: str, field: _Field) -> range:
    where = f"{field.name} field {_short(token)}"
    allowed = f"{field.low}-{field.high}"
    if field.names:
        allowed += f" or {field.names[0]}-{field.names[-1]}"
    if "~" in item:
        raise CronSyntaxError(f"{where}: '~' (cronie's random pick) is not supported")
    match = _ITEM.fullmatch(item)
    if match is None:
        _refuse_foreign(item, where, allowed, field)
        if not item:
            raise CronSyntaxError(f"{where}: an empty list item")
        raise CronSyntaxError(
            f"{where}: {_short(item)} is not a value, range (N-M) or step (*/S, N-M/S); "
            f"values are {allowed}"
        )
    first, last, step_text = match.groups()
    if first == "*":
        if last is not None:
            raise CronSyntaxError(f"{where}: '*' cannot start a range; write N-M")
        low, high = field.low, field.high
    else:
        low = _value(first, where, allowed, field)
        if last is None:
            if step_text is not None:
                raise CronSyntaxError(
                    f"{where}: {_short(item)} is not cron syntax (a step needs a range); "
                    f"write {first}-{field.high if field is not _WEEKDAY else 6}/{step_text}"
                )
            return range(low, low + 1)
        high = _value(last, where, allowed, field)
        if field is _WEEKDAY and high == 0 and low > 0:
            high = 7  # cronie: 'fri-sun' is 5-7
        if low > high:
            top = 6 if field is _WEEKDAY else field.high
            raise CronSyntaxError(
                f"{where}: the range {first}-{last} is reversed, and cron ranges do not wrap "
                f"around; write {low}-{top},{field.low}-{high}"
            )
    step = 1
    if step_text is not None:
        if not step_text.isdigit() or not step_text.isascii():
            raise CronSyntaxError(f"{where}: step {_short(step_text)} is not a whole number")
        step = int(step_text)
        if step == 0:
            raise CronSyntaxError(f"{where}: a step must be at least 1")
        if step > 1 and step > high - low:
            raise CronSyntaxError(
                f"{where}: step {_short(step_text)} is larger than the range {low}-{high} it "
                "steps through, so it would match only its start"
            )
    return range(low, high + 1, step)


def _value(text: str, where: str, allowed: str, field: _Field) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
    elif text.lower() in field.names:
        return field.low + field.names.index(text.lower())
    else:
        _refuse_foreign(text, where, allowed, field)
        raise CronSyntaxError(f"{where}: {_short(text)} is not a value; values are {allowed}")
    if not field.low <= value <= field.high:
        raise CronSyntaxError(f"{where}: {_short(text)} is out of range; values are {allowed}")
    return value


def _refuse_foreign(text: str, where: str, allowed: str, field: _Field) -> None:
    """Name Quartz's L, W, # and ? (croniter takes some of them) if ``text`` has one
    (outside the field's names: ``jul`` and ``wed`` are fine)."""
    rest = re.sub("[A-Za-z]+", lambda m: "" if m[0].lower() in field.names else m[0], text)
    for char, what in _FOREIGN.items():
        if char in rest.upper():
            raise CronSyntaxError(
                f"{where}: {what} is not cron syntax (cronie has no L, W, # or ?); "
                f"use values {allowed}"
            )


def _short(text: str) -> str:
    return repr(text if len(text) <= 24 else f"{text[:21]}...")


# --- matching ----------------------------------------------------------------------------

_SEARCH_MONTHS = 12 * 50  # Feb 29 on one weekday can be 40 years away (no leap 2100)


def next_match(spec: CronSpec, start: datetime) -> Optional[datetime]:
    """The first naive wall time at or after ``start`` that the expression matches, or
    ``None`` if there is none within 50 years (or before the year 9999 ends)."""
    start = _ceil(spec, start)
    year, month, day = start.year, start.month, start.day
    clock: Optional[Tuple[int, int, int]] = (start.hour, start.minute, start.second)
    for _ in range(_SEARCH_MONTHS):
        if month in spec.months:
            first_weekday = (calendar.weekday(year, month, 1) + 1) % 7
            last_day = calendar.monthrange(year, month)[1]
            if spec.day_and:  # only the listed days can match: look at those alone
                days: Sequence[int] = spec.day_list[bisect_left(spec.day_list, day) :]
            else:
                days = range(day, last_day + 1)
            for d in days:
                if d > last_day:
                    break
                dom = d in spec.days
                dow = (first_weekday + d - 1) % 7 in spec.weekdays
                if not ((dom and dow) if spec.day_and else (dom or dow)):
                    continue
                found = _time_at_or_after(spec, clock) if d == day else _first_time(spec)
                if found is not None:
                    return datetime(year, month, d, *found)
        i = bisect_left(spec.months, month + 1)
        if i < len(spec.months):
            month = spec.months[i]
        else:
            year, month = year + 1, spec.months[0]
            if year > 9999:
                return None
        day, clock = 1, None
    return None


def _ceil(spec: CronSpec, moment: datetime) -> datetime:
    """``moment`` rounded up to the expression's resolution (a whole second or minute)."""
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    if not spec.has_seconds and moment.second:
        moment = moment.replace(second=0) + timedelta(minutes=1)
    return moment


def _first_time(spec: CronSpec) -> Tuple[int, int, int]:
    return spec.hours[0], spec.minutes[0], spec.seconds[0]


def _time_at_or_after(
    spec: CronSpec, clock: Optional[Tuple[int, int, int]]
) -> Optional[Tuple[int, int, int]]:
    """The first time of day in the expression at or after ``clock``, that same day."""
    if clock is None:
        return _first_time(spec)
    hour, minute, second = clock
    for h in spec.hours[bisect_left(spec.hours, hour) :]:
        if h > hour:
            return h, spec.minutes[0], spec.seconds[0]
        for m in spec.minutes[bisect_left(spec.minutes, minute) :]:
            if m > minute:
                return h, m, spec.seconds[0]
            i = bisect_left(spec.seconds, second)
            if i < len(spec.seconds):
                return h, m, spec.seconds[i]
    return None


def count_matches(spec: CronSpec, start: datetime, end: datetime) -> int:
    """How many naive wall times in ``[start, end)`` the expression matches, counted
    arithmetically (each matching day holds the same number of times)."""
    start, end = _ceil(spec, start), _ceil(spec, end)
    if end <= start:
        return 0
    first, last = start.date(), end.date()
    if first == last:
        return (_rank(spec, end) - _rank(spec, start)) if spec.day_matches(first) else 0
    per_day = len(spec.hours) * len(spec.minutes) * len(spec.seconds)
    total = (per_day - _rank(spec, start)) if spec.day_matches(first) else 0
    total += _rank(spec, end) if spec.day_matches(last) else 0
    return total + per_day * _matching_days(spec, first + timedelta(days=1), last)


def _rank(spec: CronSpec, moment: datetime) -> int:
    """How many of the expression's times of day come before ``moment``'s."""
    per_hour = len(spec.minutes) * len(spec.seconds)
    rank = bisect_left(spec.hours, moment.hour) * per_hour
    if not _contains(spec.hours, moment.hour):
        return rank
    rank += bisect_left(spec.minutes, moment.minute) * len(spec.seconds)
    if not _contains(spec.minutes, moment.minute):
        return rank
    return rank + bisect_left(spec.seconds, moment.second)


def _contains(values: Sequence[int], value: int) -> bool:
    i = bisect_left(values, value)
    return i < len(values) and values[i] == value


def _matching_days(spec: CronSpec, first: date, stop: date) -> int:
    """Matching days in ``[first, stop)``, skipping whole months the expression lacks."""
    count, day = 0, first
    while day < stop:
        if day.month not in spec.months:
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
            continue
        count += spec.day_matches(day)
        day += timedelta(days=1)
    return count
