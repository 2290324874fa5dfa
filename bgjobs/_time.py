"""How bgjobs reads the time: the wall clock as the caller sees it, the monotonic clock as
it really is.

Wall-clock reads (due times of crons, shown timestamps, run records) follow whatever the
:mod:`time` module says at the moment of the call, so a test library that patches it —
freezegun's ``freeze_time``, with ``tick=True`` or ``move_to`` too — moves every time
bgjobs shows or schedules by. Two freezegun details need care:

* freezegun answers the *real* time to a caller with a ``threading`` frame among its
  nearest five, so a timer thread would read 2026 while the test reads its frozen 2024,
  fire every cron at once and spin. :func:`wall_time` asks freezegun for its current time
  directly, the same in every thread (unless the test ignores ``bgjobs`` itself).
* freezegun also freezes ``time.monotonic``. Delays, timeouts and interval schedules count
  on :func:`monotonic`, which freezegun cannot reach: frozen time never makes a wait hang,
  and never makes one spin.
"""

from __future__ import annotations

import calendar
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional

__all__ = ["SUSPEND_CLOCK", "freezegun_active", "monotonic", "utc_now", "wall_time"]

_FREEZEGUN = "freezegun.api"


def _unpatched_monotonic() -> Callable[[], float]:
    read = time.monotonic
    if getattr(read, "__module__", None) == _FREEZEGUN:  # bgjobs imported inside a frozen block
        real = getattr(sys.modules.get(_FREEZEGUN), "real_monotonic", None)
        if callable(real):
            return real  # type: ignore[no-any-return]
    return read


def _suspend_clock() -> Optional[int]:
    """The ``clock_gettime`` clock that keeps counting while the machine is suspended:
    ``CLOCK_BOOTTIME`` on Linux, ``CLOCK_MONOTONIC`` on macOS (where :func:`time.monotonic`
    stops during sleep, as it does on Linux); ``None`` elsewhere (Windows)."""
    if not hasattr(time, "clock_gettime"):
        return None
    if hasattr(time, "CLOCK_BOOTTIME"):
        return int(time.CLOCK_BOOTTIME)
    if sys.platform == "darwin" and hasattr(time, "CLOCK_MONOTONIC"):
        return int(time.CLOCK_MONOTONIC)
    return None


SUSPEND_CLOCK = _suspend_clock()
"""The clock :func:`monotonic` reads; ``None``: :func:`time.monotonic`, which may not count
the time the machine was suspended."""


class _Real:
    # freezegun swaps the real functions wherever a *module* attribute holds them; a class
    # attribute is out of its reach.
    monotonic = staticmethod(_unpatched_monotonic())
    clock_gettime: Callable[[int], float] = staticmethod(
        getattr(time, "clock_gettime", lambda clock: time.monotonic())
    )


def monotonic() -> float:
    """Seconds on the real monotonic clock, counting suspend where the platform can
    (:data:`SUSPEND_CLOCK`), even while freezegun freezes ``time.monotonic``."""
    if SUSPEND_CLOCK is not None:
        return _Real.clock_gettime(SUSPEND_CLOCK)
    return _Real.monotonic()


def freezegun_active() -> bool:
    """Whether freezegun has patched :func:`time.time` right now."""
    return getattr(time.time, "__module__", None) == _FREEZEGUN


def wall_time() -> float:
    """Seconds since the Unix epoch, as :func:`time.time` says right now (frozen time too)."""
    read = time.time
    if getattr(read, "__module__", None) != _FREEZEGUN:
        return read()
    frozen = _freezegun_now()
    return read() if frozen is None else frozen


def utc_now() -> datetime:
    """:func:`wall_time` as an aware UTC ``datetime``."""
    return datetime.fromtimestamp(wall_time(), timezone.utc)


def _freezegun_now() -> Optional[float]:
    """freezegun's current time for every caller alike, or ``None`` to use ``time.time()``."""
    api: Any = sys.modules.get(_FREEZEGUN)
    try:
        ignore_lists = api.ignore_lists
        if not ignore_lists:  # stopping: time.time is about to be the real one again
            return None
        if any("bgjobs".startswith(prefix) for prefix in ignore_lists[-1]):
            return None  # the test asked freezegun to leave bgjobs on real time
        now: datetime = api.get_current_time()  # naive UTC
    except Exception:  # another freezegun version: its own answer, call-stack rules and all
        return None
    return calendar.timegm(now.timetuple()) + now.microsecond / 1_000_000
