"""Time zone names as a Trigger.dev server accepts them.

The server accepts exactly its runtime's ``Intl.supportedValuesOf("timeZone")`` plus
``UTC`` (``GET /api/v1/timezones``). That list depends on its Node/ICU version and holds
one name per zone — Node 20 has ``Asia/Calcutta`` and ``Europe/Kiev`` but not
``Asia/Kolkata`` or ``Europe/Kyiv``, and no ``Etc/UTC`` or ``US/Eastern`` — while Python's
tz database knows them all. :func:`server_zone` finds the name the server accepts for the
same zone: the name itself, ``UTC`` for UTC's aliases, a known link (either direction),
else a listed zone whose UTC offsets agree from 2025 to 2037 — whichever it picks, the
schedule fires at the same instants.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Collection, Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["UTC_ALIASES", "server_zone"]

UTC_ALIASES = frozenset(
    {
        "UTC", "Etc/UTC", "Etc/UCT", "UCT", "Universal", "Etc/Universal", "Zulu", "Etc/Zulu",
        "GMT", "Etc/GMT", "Etc/GMT+0", "Etc/GMT-0", "Etc/GMT0", "GMT+0", "GMT-0", "GMT0",
        "Greenwich", "Etc/Greenwich",
    }
)  # fmt: skip
"""Names of UTC itself (the GMT names have UTC's offset all year, so they fire alike)."""

# Renamed zones and the old "backward" links people still use: (current, older) pairs,
# tried both ways, since an older server knows only the old name and a newer one may
# know only the new.
_LINKS: Tuple[Tuple[str, str], ...] = (
    ("Asia/Kolkata", "Asia/Calcutta"),
    ("Europe/Kyiv", "Europe/Kiev"),
    ("Asia/Ho_Chi_Minh", "Asia/Saigon"),
    ("Asia/Kathmandu", "Asia/Katmandu"),
    ("Asia/Yangon", "Asia/Rangoon"),
    ("America/Nuuk", "America/Godthab"),
    ("Pacific/Kanton", "Pacific/Enderbury"),
    ("Atlantic/Faroe", "Atlantic/Faeroe"),
    ("Pacific/Chuuk", "Pacific/Truk"),
    ("Pacific/Pohnpei", "Pacific/Ponape"),
    ("America/Argentina/Buenos_Aires", "America/Buenos_Aires"),
    ("America/Indiana/Indianapolis", "America/Indianapolis"),
    ("America/Kentucky/Louisville", "America/Louisville"),
    ("America/New_York", "US/Eastern"),
    ("America/Chicago", "US/Central"),
    ("America/Denver", "US/Mountain"),
    ("America/Los_Angeles", "US/Pacific"),
    ("America/Anchorage", "US/Alaska"),
    ("America/Phoenix", "US/Arizona"),
    ("Pacific/Honolulu", "US/Hawaii"),
    ("America/Halifax", "Canada/Atlantic"),
    ("America/Toronto", "Canada/Eastern"),
    ("America/Winnipeg", "Canada/Central"),
    ("America/Edmonton", "Canada/Mountain"),
    ("America/Vancouver", "Canada/Pacific"),
    ("Europe/London", "GB"),
    ("Europe/Dublin", "Eire"),
    ("Asia/Shanghai", "PRC"),
    ("Asia/Tokyo", "Japan"),
    ("Asia/Seoul", "ROK"),
    ("Asia/Taipei", "ROC"),
    ("Asia/Singapore", "Singapore"),
    ("Asia/Hong_Kong", "Hongkong"),
    ("Asia/Jerusalem", "Israel"),
    ("Asia/Tehran", "Iran"),
    ("Europe/Istanbul", "Turkey"),
    ("Europe/Warsaw", "Poland"),
    ("Europe/Lisbon", "Portugal"),
    ("Africa/Cairo", "Egypt"),
    ("Australia/Sydney", "Australia/NSW"),
    ("Pacific/Auckland", "NZ"),
    ("America/Sao_Paulo", "Brazil/East"),
    ("America/Mexico_City", "Mexico/General"),
)

_SAMPLE_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
_SAMPLE_STEP = timedelta(days=3, hours=7)  # drifts through every hour and weekday
_SAMPLE_COUNT = 1450  # to the end of 2037


def server_zone(name: str, accepted: Collection[str]) -> Optional[str]:
    """The name ``accepted`` (the server's list) has for the zone ``name``; ``None`` if none."""
    if name in accepted:
        return name
    if name in UTC_ALIASES:
        return next((alias for alias in ("UTC", "Etc/UTC") if alias in accepted), None)
    for current, older in _LINKS:
        if name == current and older in accepted:
            return older
        if name == older and current in accepted:
            return current
    return _same_offsets(name, tuple(sorted(accepted)))


@lru_cache(maxsize=256)
def _same_offsets(name: str, accepted: Tuple[str, ...]) -> Optional[str]:
    """A listed zone with ``name``'s UTC offset at every sampled instant, if any."""
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    samples = [_SAMPLE_START + _SAMPLE_STEP * i for i in range(_SAMPLE_COUNT)]
    wanted = [_offset(zone, t) for t in samples]
    # Cheap test first: most candidates differ at one of a few instants.
    probe = range(0, _SAMPLE_COUNT, _SAMPLE_COUNT // 8)
    for candidate in accepted:
        other = _zone(candidate)
        if other is None:
            continue
        if any(_offset(other, samples[i]) != wanted[i] for i in probe):
            continue
        if all(_offset(other, t) == w for t, w in zip(samples, wanted)):
            return candidate
    return None


def _offset(zone: ZoneInfo, instant: datetime) -> Optional[timedelta]:
    return instant.astimezone(zone).utcoffset()


@lru_cache(maxsize=1024)
def _zone(name: str) -> Optional[ZoneInfo]:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
