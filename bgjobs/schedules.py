"""When jobs run: pure interval and cron maths, with no threads and an injectable clock.

A :class:`Schedule` answers one question, APScheduler-style: given the previous due
time and the current time, when is the next one, and how many due times were missed in
between? Computing from the previous *due* time (not from when a run ended) is what keeps
interval jobs from drifting.

Interval schedules count on the monotonic clock, so wall-clock jumps (NTP, DST, a
sysadmin's ``date -s``) do not move them. Cron schedules are calendar rules and count
on the wall clock, in the job's timezone, with these DST rules:

* a local time that does not exist that day (spring forward) fires once, at the
  transition instant (the first valid instant after it);
* a local time that occurs twice (fall back) fires once, at its first occurrence —
  unless the cron's hour field is ``*``, in which case it fires in both occurrences,
  so an hourly or per-minute job keeps running through the repeated hour.
"""

from __future__ import annotations

import abc
import math
import threading
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, List, Optional, Protocol, Tuple

from . import _time
from .errors import InvalidScheduleError
from .types import Interval, TimezoneArg

if TYPE_CHECKING:
    from croniter import croniter as Croniter

__all__ = [
    "CRON_ALIASES",
    "Clock",
    "CronSchedule",
    "IntervalSchedule",
    "OnceSchedule",
    "Schedule",
    "SystemClock",
    "format_seconds",
    "parse_cron",
    "parse_interval",
    "resolve_timezone",
    "to_five_field_cron",
    "utc_datetime",
]

UTC = timezone.utc

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The ``@`` aliases bgjobs accepts, and the 5-field expression each stands for."""

# Cap on cron candidates examined for one next-fire computation; even an every-second
# cron needs at most ~3,600 around a DST change.
_MAX_CANDIDATES = 20_000


class Clock(Protocol):
    """Where schedules read the time: inject a fake one in tests."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for delays and intervals)."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch (for calendar maths and displayed times)."""
        ...

    def wait(self, condition: threading.Condition, timeout: float) -> object:
        """Wait on ``condition`` (held by the caller) until notified or ``timeout`` seconds
        pass on this clock; returning early is fine (callers check the time again)."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time` and real waits.

    The wall clock is read anew on every call, so freezegun's frozen or ticking time is
    seen; the monotonic clock stays real under freezegun, so waits neither hang nor spin
    (:mod:`bgjobs._time`)."""

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.wall_time()

    def wait(self, condition: threading.Condition, timeout: float) -> object:
        return condition.wait(timeout)


def format_seconds(seconds: float) -> str:
    """``300`` → ``"5m"``, ``5400`` → ``"1h30m"``, ``0.25`` → ``"0.25s"``."""
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    out, rest = "", int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


class Schedule(abc.ABC):
    """A rule producing due times, in the clock domain named by :attr:`wall_clock`."""

    #: True: due times are Unix epoch seconds (``Clock.time``); False: ``Clock.monotonic``.
    wall_clock: bool = False

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """How the schedule reads in a status: ``"every 5m"``, ``"cron 0 9 * * * (UTC)"``."""

    @abc.abstractmethod
    def first_due(self, now: float) -> float:
        """The first due time after ``now`` for a job scheduled at ``now``."""

    @abc.abstractmethod
    def next_due(self, previous_due: float, now: float) -> Tuple[float, int]:
        """``(next, missed)``: the first due time after ``previous_due`` that is also after
        ``now``, and how many due times in between were passed over (late timer, overrun)."""


class IntervalSchedule(Schedule):
    """Every ``seconds``, on the grid ``start + k * seconds`` (like ``setInterval``)."""

    wall_clock = False

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @property
    def description(self) -> str:
        return f"every {format_seconds(self.seconds)}"

    def first_due(self, now: float) -> float:
        return now + self.seconds

    def next_due(self, previous_due: float, now: float) -> Tuple[float, int]:
        # Multiply rather than add repeatedly, so float error does not accumulate.
        missed = max(0, math.floor((now - previous_due) / self.seconds))
        nxt = previous_due + (missed + 1) * self.seconds
        if nxt <= now:  # float rounding at an exact boundary
            missed += 1
            nxt += self.seconds
        return nxt, missed

    def __repr__(self) -> str:
        return f"IntervalSchedule(seconds={self.seconds!r})"


class OnceSchedule(Schedule):
    """One fire, at ``at`` (Unix seconds): a one-off job (``schedule_once``). After it,
    :meth:`next_due` answers infinity, which runtimes read as "nothing more"."""

    wall_clock = True

    def __init__(self, at: float) -> None:
        self.at = at

    @property
    def description(self) -> str:
        return f"once at {utc_datetime(self.at).isoformat()}"

    def first_due(self, now: float) -> float:
        return self.at

    def next_due(self, previous_due: float, now: float) -> Tuple[float, int]:
        return math.inf, 0

    def __repr__(self) -> str:
        return f"OnceSchedule(at={self.at!r})"


class CronSchedule(Schedule):
    """A cron expression evaluated in a timezone (croniter semantics, DST rules above)."""

    wall_clock = True

    def __init__(self, expression: str, tz: tzinfo, *, seconds_field: bool) -> None:
        self.expression = expression
        self.tz = tz
        self._seconds_field = seconds_field
        fields = expression.split()
        hour = fields[2] if seconds_field else fields[1]
        # Hour field "*": the job follows real time through a repeated hour (see module doc).
        self._every_hour = hour in ("*", "*/1")

    @property
    def description(self) -> str:
        return f"cron {self.expression} ({_tz_name(self.tz)})"

    def _iter(self, start: datetime) -> Croniter:
        from croniter import croniter

        return croniter(self.expression, start, second_at_beginning=self._seconds_field)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware), as an aware UTC datetime."""
        after = after.astimezone(UTC)
        # A local time n fires at n - offset; only n > after + (smallest offset nearby)
        # can land after `after`. Starting there includes a repeated hour's second pass.
        offsets = [
            _offset(self.tz, after - timedelta(hours=3)),
            _offset(self.tz, after),
            _offset(self.tz, after + timedelta(hours=3)),
        ]
        start = (after + min(offsets)).replace(tzinfo=None)
        largest = max(offsets)
        it = self._iter(start)
        best: Optional[datetime] = None
        for _ in range(_MAX_CANDIDATES):
            naive: datetime = it.get_next(datetime)
            # Every instant of a local time n is at least n - largest offset.
            if best is not None and naive.replace(tzinfo=UTC) - largest > best:
                break
            for instant in self._instants(naive):
                if instant > after and (best is None or instant < best):
                    best = instant
        if best is None:
            raise InvalidScheduleError(f"cron {self.expression!r} has no fire time after {after}")
        return best

    def _instants(self, naive: datetime) -> List[datetime]:
        """The UTC instants at which local wall time ``naive`` fires (0, 1 or 2 of them)."""
        first = naive.replace(tzinfo=self.tz).astimezone(UTC)
        second = naive.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(self.tz).replace(tzinfo=None) == naive:  # occurs twice
            early, late = sorted((first, second))
            return [early, late] if self._every_hour else [early]
        return [_transition(self.tz, *sorted((first, second)))]  # does not exist

    def first_due(self, now: float) -> float:
        return self.next_fire(utc_datetime(now)).timestamp()

    def next_due(self, previous_due: float, now: float) -> Tuple[float, int]:
        nxt = self.next_fire(utc_datetime(previous_due))
        missed = 0
        current = utc_datetime(now)
        while nxt <= current:
            missed += 1
            if missed >= 1000:  # a long suspend: stop counting one by one
                nxt = self.next_fire(current)
                break
            nxt = self.next_fire(nxt)
        return nxt.timestamp(), missed

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, tz={_tz_name(self.tz)!r})"


def utc_datetime(epoch: float) -> datetime:
    """Unix time as an aware UTC ``datetime`` (how bgjobs shows every timestamp)."""
    return datetime.fromtimestamp(epoch, UTC)


def _offset(tz: tzinfo, instant: datetime) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta(0)


def _transition(tz: tzinfo, low: datetime, high: datetime) -> datetime:
    """First instant in ``(low, high]`` whose UTC offset is the one at ``high`` (1 s steps)."""
    target = _offset(tz, high)
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(tz, utc_datetime(mid)) == target:
            hi = mid
        else:
            lo = mid
    return utc_datetime(hi)


def _tz_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", None) or getattr(tz, "zone", None) or tz.tzname(None) or tz)


# --- parsing and validation -------------------------------------------------------------


def parse_interval(job_id: str, interval: Interval) -> float:
    """Seconds from a number or ``timedelta``; must be positive and finite."""
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
    elif isinstance(interval, (int, float)) and not isinstance(interval, bool):
        seconds = float(interval)
    else:
        raise InvalidScheduleError(
            f"job {job_id!r}: interval must be a number of seconds or a timedelta, "
            f"got {interval!r} ({type(interval).__name__})"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidScheduleError(
            f"job {job_id!r}: interval must be a positive, finite number of seconds, "
            f"got {interval!r}"
        )
    return seconds


def resolve_timezone(job_id: str, tz: TimezoneArg, default: Optional[str] = None) -> tzinfo:
    """A ``tzinfo`` from an IANA name or tzinfo; ``None`` means ``default`` (the setting
    ``BGJOBS_TIMEZONE``, :attr:`bgjobs.config.Settings.timezone`), else UTC."""
    if tz is None:
        if not default:
            return UTC
        tz = default
    if isinstance(tz, tzinfo):
        zone = getattr(tz, "zone", None)
        if zone and hasattr(tz, "localize"):  # pytz: its tzinfo only works via localize()
            tz = str(zone)
        else:
            return tz
    if not isinstance(tz, str):
        raise InvalidScheduleError(
            f"job {job_id!r}: timezone must be an IANA name like 'Europe/Paris' or a tzinfo, "
            f"got {tz!r}"
        )
    if tz.upper() == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(tz)
    except (ValueError, OSError, LookupError):
        # ZoneInfoNotFoundError is a KeyError; malformed keys raise ValueError.
        raise InvalidScheduleError(
            f"job {job_id!r}: unknown timezone {tz!r}; use an IANA name like "
            "'Europe/Paris' or 'America/New_York'"
        ) from None


def parse_cron(job_id: str, expression: str, tz: tzinfo) -> CronSchedule:
    """Validate a cron expression and return its schedule.

    Accepted: 5 fields (``"0 9 * * *"``), 6 fields with seconds *first*
    (``"*/30 * * * * *"``), and :data:`CRON_ALIASES`.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidScheduleError(
            f"job {job_id!r}: cron expression must be a non-empty string, got {expression!r}"
        )
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in CRON_ALIASES:
            raise InvalidScheduleError(
                f"job {job_id!r}: unknown cron alias {expression!r}; use one of "
                f"{', '.join(CRON_ALIASES)}"
            )
        text = CRON_ALIASES[text.lower()]
    count = len(text.split())
    if count not in (5, 6):
        raise InvalidScheduleError(
            f"job {job_id!r}: cron expression {expression!r} has {count} fields; use 5 "
            "('minute hour day month weekday'), 6 with seconds first, or an alias like @hourly"
        )
    from croniter import croniter

    seconds_field = count == 6
    if not croniter.is_valid(text, second_at_beginning=seconds_field):
        raise InvalidScheduleError(
            f"job {job_id!r}: invalid cron expression {expression!r}; expected 5 fields "
            "('minute hour day month weekday'), 6 with seconds first, or an alias like @hourly"
        )
    schedule = CronSchedule(text, tz, seconds_field=seconds_field)
    try:
        schedule.next_fire(datetime.now(UTC))
    except Exception as exc:  # croniter raises its own types for impossible dates
        raise InvalidScheduleError(
            f"job {job_id!r}: cron expression {expression!r} never fires ({exc})"
        ) from None
    return schedule


def to_five_field_cron(job_id: str, schedule: Schedule) -> str:
    """The exact 5-field cron for a schedule, for runtimes with minute resolution.

    Intervals convert only when cron can express them exactly: 5 min → ``*/5 * * * *``,
    1 h → ``0 * * * *``, 24 h → ``0 0 * * *``, 7 days → ``0 0 * * 0``; 7 min cannot be.
    A seconds field of ``0`` is dropped; any other seconds field is an error.
    """
    if isinstance(schedule, CronSchedule):
        fields = schedule.expression.split()
        if len(fields) == 6:
            if fields[0] not in ("0", "00"):
                raise InvalidScheduleError(
                    f"job {job_id!r}: cron {schedule.expression!r} fires at seconds "
                    f"{fields[0]!r}, but this runtime's cron has minute resolution; "
                    "use a 5-field expression"
                )
            fields = fields[1:]
        return " ".join(fields)
    if isinstance(schedule, IntervalSchedule):
        cron = _interval_cron(schedule.seconds)
        if cron is None:
            raise InvalidScheduleError(
                f"job {job_id!r}: an interval of {format_seconds(schedule.seconds)} cannot be "
                "expressed exactly as a cron; use a divisor of an hour in minutes (1, 2, 3, 4, "
                "5, 6, 10, 12, 15, 20, 30), a divisor of a day in hours, 24h or 7 days — or "
                "schedule it with a cron expression"
            )
        return cron
    raise InvalidScheduleError(f"job {job_id!r}: unsupported schedule {schedule!r}")


def _interval_cron(seconds: float) -> Optional[str]:
    if seconds != int(seconds) or int(seconds) % 60:
        return None
    minutes = int(seconds) // 60
    if minutes < 60:
        if 60 % minutes:
            return None
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if minutes % 60:
        return None
    hours = minutes // 60
    if hours < 24:
        if 24 % hours:
            return None
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    if hours == 24:
        return "0 0 * * *"
    if hours == 24 * 7:
        return "0 0 * * 0"
    return None
