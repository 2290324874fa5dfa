"""When jobs run: pure interval and cron maths, with no threads and an injectable clock.

A :class:`Schedule` answers one question, APScheduler-style: given the previous due
time and the current time, when is the next one, and how many due times were missed in
between? Computing from the previous *due* time (not from when a run ended) is what keeps
interval jobs from drifting.

Interval schedules count on the clock's ``monotonic`` (for :class:`SystemClock`, one that
keeps counting while the machine is suspended where the platform has one), so wall-clock
jumps (NTP, DST, a sysadmin's ``date -s``) do not move them. Cron schedules are calendar
rules (cronie's, :mod:`bgjobs._cron`) and count on the wall clock, in the job's timezone,
with cronie's DST rules. A *wildcard* job is one whose minute or hour field starts with
``*`` (``* 9 * * *``, ``30 * * * *``, ``0 */2 * * *``, ``@hourly``); the others have fixed
times of day:

* a wall time that does not exist that day (the clocks jump forward over it) fires once,
  at the jump, for a fixed-time job; a wildcard job does not fire for it at all;
* a wall time that occurs twice (the clocks go back) fires in its first occurrence only
  for a fixed-time job, and in both for a wildcard job.
"""

from __future__ import annotations

import abc
import math
import threading
from datetime import datetime, timedelta, timezone, tzinfo
from typing import List, Optional, Protocol, Tuple

from . import _cron, _time
from ._cron import CRON_ALIASES, CronSpec
from ._time import SUSPEND_CLOCK
from .errors import InvalidScheduleError
from .types import Interval, TimezoneArg

__all__ = [
    "CRON_ALIASES",
    "Clock",
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "CronSchedule",
    "IntervalSchedule",
    "OnceSchedule",
    "Schedule",
    "SUSPEND_CLOCK",
    "SystemClock",
    "format_seconds",
    "parse_cron",
    "parse_interval",
    "resolve_timezone",
    "to_five_field_cron",
    "utc_datetime",
]

UTC = timezone.utc


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
    """The real clock: a monotonic clock that counts suspend, :func:`time.time` and real
    waits.

    ``monotonic()`` reads :data:`SUSPEND_CLOCK` where the platform has one, so an interval
    job sees the time a laptop or VM spent suspended and counts the fires it missed. The
    wall clock is read anew on every call, so freezegun's frozen or ticking time is seen;
    the monotonic clock stays real under freezegun, so waits neither hang nor spin
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
    """Every ``seconds``, on the grid ``anchor + k * seconds`` (like ``setInterval``).

    The anchor is the time the job was scheduled (:meth:`first_due`) or, for a due time
    not on this grid (one taken over from another process), that due time. Each due time
    is computed from the anchor and its index, never by adding to the previous one, so
    float error does not accumulate however long the job runs.
    """

    wall_clock = False

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._anchor: Optional[float] = None

    @property
    def description(self) -> str:
        return f"every {format_seconds(self.seconds)}"

    def first_due(self, now: float) -> float:
        self._anchor = now
        return self._at(now, 1)

    def next_due(self, previous_due: float, now: float) -> Tuple[float, int]:
        anchor, index = self._index(previous_due)
        missed = max(0, math.floor((now - previous_due) / self.seconds))
        nxt = self._at(anchor, index + missed + 1)
        while nxt <= now:  # float rounding at an exact boundary: once at most
            missed += 1
            nxt = self._at(anchor, index + missed + 1)
        return nxt, missed

    def _at(self, anchor: float, index: int) -> float:
        return anchor + index * self.seconds

    def _index(self, due: float) -> Tuple[float, int]:
        """``due``'s place on the grid: (anchor, k) with ``anchor + k * seconds == due``."""
        anchor = self._anchor
        if anchor is not None:
            index = round((due - anchor) / self.seconds)
            if index >= 0 and self._at(anchor, index) == due:
                return anchor, index
        self._anchor = due  # not on this grid: it becomes the grid
        return due, 0

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
    """A cron expression (cronie's rules, :mod:`bgjobs._cron`) evaluated in a timezone,
    with cronie's DST rules (module doc)."""

    wall_clock = True

    def __init__(self, expression: str, tz: tzinfo, *, seconds_field: bool) -> None:
        self.expression = expression
        self.tz = tz
        self._seconds_field = seconds_field
        self.spec: CronSpec = _cron.parse(expression)

    @property
    def description(self) -> str:
        return f"cron {self.expression} ({_tz_name(self.tz)})"

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware), as an aware UTC datetime.

        Walks local wall times: a handful of candidates, however often the cron fires.
        """
        after = after.astimezone(UTC)
        local = after.astimezone(self.tz)
        naive = local.replace(tzinfo=None)
        spec = self.spec
        best: Optional[datetime] = None
        early, late = self._offsets(naive)
        if early != late and spec.wildcard and not local.fold:
            # In the first pass of a repeated hour: a wildcard job's second pass is due
            # too, from its start, after the first pass ends.
            start, end = self._fold(naive, early, late)
            n = _cron.next_match(spec, start)
            if n is not None and n < end:
                best = (n - late).replace(tzinfo=UTC)
        start = naive + timedelta(microseconds=1)
        for _ in range(8):  # each turn passes a gap or a repeated hour: 3 at most
            n = _cron.next_match(spec, start)
            if n is None:
                break
            early, late = self._offsets(n)
            if early == late:
                candidate = (n - early).replace(tzinfo=UTC)
            elif early > late:  # n occurs twice: the clocks went back
                candidate = (n - early).replace(tzinfo=UTC)
                if candidate <= after:  # after the first pass: only wildcards run again
                    if spec.wildcard:
                        candidate = (n - late).replace(tzinfo=UTC)
                    else:
                        start = self._fold(n, early, late)[1]
                        continue
            else:  # n does not exist: the clocks went forward over it
                low, high = (n - late).replace(tzinfo=UTC), (n - early).replace(tzinfo=UTC)
                transition = _transition(self.tz, low, high)
                if spec.wildcard:  # cronie runs wildcard jobs at real times only
                    start = (transition + late).replace(tzinfo=None)
                    continue
                candidate = transition  # fixed times run once, when the clocks jump
            if best is None or candidate < best:
                best = candidate
            break
        if best is None:
            raise InvalidScheduleError(f"cron {self.expression!r} has no fire time after {after}")
        return best

    def _offsets(self, naive: datetime) -> Tuple[timedelta, timedelta]:
        """The UTC offsets of wall time ``naive`` in its first and second occurrence
        (equal unless it is repeated or skipped)."""
        first = naive.replace(tzinfo=self.tz).utcoffset() or timedelta(0)
        second = naive.replace(tzinfo=self.tz, fold=1).utcoffset() or timedelta(0)
        return first, second

    def _fold(
        self, naive: datetime, early: timedelta, late: timedelta
    ) -> Tuple[datetime, datetime]:
        """The repeated wall times ``[start, end)`` around ``naive``, which is one of them."""
        low, high = (naive - early).replace(tzinfo=UTC), (naive - late).replace(tzinfo=UTC)
        transition = _transition(self.tz, low, high).replace(tzinfo=None)
        return transition + late, transition + early

    def first_due(self, now: float) -> float:
        return self.next_fire(utc_datetime(now)).timestamp()

    def next_due(self, previous_due: float, now: float) -> Tuple[float, int]:
        nxt = self.next_fire(utc_datetime(previous_due))
        if nxt.timestamp() > now:
            return nxt.timestamp(), 0
        current = utc_datetime(now)
        missed = self.count_fires(nxt, current + timedelta(microseconds=1))
        return self.next_fire(current).timestamp(), missed

    def count_fires(self, start: datetime, stop: datetime) -> int:
        """How many fire times lie in ``[start, stop)``: counted, not enumerated, so a
        day's pause of an every-second cron costs no more than a minute's."""
        start, stop = start.astimezone(UTC), stop.astimezone(UTC)
        if stop <= start:
            return 0
        spec, tz, total = self.spec, self.tz, 0
        # Between two changes of the UTC offset, fires and wall times map one to one.
        edges = [start, *_transitions(tz, start, stop), stop]
        for low, high in zip(edges, edges[1:]):
            offset = _offset(tz, low)
            total += _cron.count_matches(spec, _wall(low, offset), _wall(high, offset))
        if spec.wildcard:
            return total  # wildcard jobs fire at every real time, and only then
        for transition in edges[1:-1]:
            before = _offset(tz, transition - timedelta(seconds=1))
            after = _offset(tz, transition)
            if after > before:
                # Fixed times skipped by the jump fire once, at the jump (unless the wall
                # time the clocks jump to fires then anyway).
                jump_to = _wall(transition, after)
                skipped = _cron.count_matches(spec, _wall(transition, before), jump_to)
                if skipped and _cron.next_match(spec, jump_to) != jump_to:
                    total += 1
            elif after < before:  # the repeated wall times fire in their first pass only
                end = min(transition + (before - after), stop)
                total -= _cron.count_matches(spec, _wall(transition, after), _wall(end, after))
        local = start.astimezone(tz)
        naive = local.replace(tzinfo=None)
        early, late = self._offsets(naive)
        if local.fold and early > late and start not in edges[1:-1]:
            # start is inside a second pass already
            end = min(self._fold(naive, early, late)[1], _wall(stop, late))
            total -= _cron.count_matches(spec, naive, end)
        return total

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, tz={_tz_name(self.tz)!r})"


def utc_datetime(epoch: float) -> datetime:
    """Unix time as an aware UTC ``datetime`` (how bgjobs shows every timestamp)."""
    return datetime.fromtimestamp(epoch, UTC)


def _offset(tz: tzinfo, instant: datetime) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta(0)


def _wall(instant: datetime, offset: timedelta) -> datetime:
    return (instant + offset).replace(tzinfo=None)


def _transitions(tz: tzinfo, start: datetime, stop: datetime) -> List[datetime]:
    """The instants in ``[start, stop)`` at which ``tz`` changes its UTC offset (found
    by comparing offsets a day apart: no zone changes twice within a day)."""
    found: List[datetime] = []
    low = start - timedelta(seconds=1)
    offset = _offset(tz, low)
    while low < stop:
        high = min(low + timedelta(days=1), stop)
        following = _offset(tz, high)
        if following != offset:
            found.append(_transition(tz, low, high))
            offset = following
        low = high
    return [t for t in found if start <= t < stop]


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


MIN_INTERVAL = 0.001
"""The shortest interval bgjobs accepts, in seconds (1 ms): shorter ones would only burn
a core on timer bookkeeping."""

MAX_INTERVAL = 100 * 365.25 * 86400
"""The longest interval bgjobs accepts, in seconds (100 years): every due time must stay
a representable date."""


def parse_interval(job_id: str, interval: Interval) -> float:
    """Seconds from a number or ``timedelta``, between :data:`MIN_INTERVAL` and
    :data:`MAX_INTERVAL`."""
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
    elif isinstance(interval, (int, float)) and not isinstance(interval, bool):
        try:
            seconds = float(interval)
        except OverflowError:  # an int too large for a float, like 10**400
            seconds = math.inf
    else:
        raise InvalidScheduleError(
            f"job {job_id!r}: interval must be a number of seconds or a timedelta, "
            f"got {interval!r} ({type(interval).__name__})"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidScheduleError(
            f"job {job_id!r}: interval must be a positive, finite number of seconds, "
            f"got {_short_repr(interval)}"
        )
    if seconds < MIN_INTERVAL:
        raise InvalidScheduleError(
            f"job {job_id!r}: interval {_short_repr(interval)} is shorter than the minimum "
            f"of {MIN_INTERVAL:g} s"
        )
    if seconds > MAX_INTERVAL:
        raise InvalidScheduleError(
            f"job {job_id!r}: interval {_short_repr(interval)} is longer than the maximum "
            f"of 100 years ({MAX_INTERVAL:.0f} s)"
        )
    return seconds


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


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
    (``"*/30 * * * * *"``), and :data:`CRON_ALIASES`, read with cronie's rules (README,
    "Cron rules"). An error names the job, the field, its allowed values and the token.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidScheduleError(
            f"job {job_id!r}: cron expression must be a non-empty string, got {expression!r}"
        )
    try:
        spec = _cron.parse(expression)
    except _cron.CronSyntaxError as exc:
        raise InvalidScheduleError(
            f"job {job_id!r}: invalid cron expression {_short_repr(expression)}: {exc}"
        ) from None
    text = expression.strip(" \t")
    text = " ".join(_cron.CRON_ALIASES.get(text.lower(), text).split())
    schedule = CronSchedule(text, tz, seconds_field=spec.has_seconds)
    try:
        # Some expressions match only wall times this zone skips, every year: in
        # Europe/Paris, '* 2 25-31 3 */7' is the hour the clocks jump over, and a wildcard
        # job never runs then.
        schedule.next_fire(_time.utc_now())
    except InvalidScheduleError:
        raise InvalidScheduleError(
            f"job {job_id!r}: cron expression {_short_repr(expression)} never fires in "
            f"{_tz_name(tz)}"
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
