"""What one cron next-fire computation costs, DST changes included (issue 12, item 6).

Budget: no ``CronSchedule.next_fire`` call over 1 ms for any expression anywhere in 2026.
Measures 160 expressions (the kinds tests/test_cron_corpus.py compares) in six zones, from
the first of every month and from just before every 2026 offset change; each call is timed
three times and the fastest kept (what the code costs, not what the scheduler did meanwhile).
Also: an every-second cron chained across Paris's spring-forward (the issue's 90-135 ms case),
and counting a day's and a year's missed fires.

    python -m benchmarks.cron_next_fire
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from typing import List
from zoneinfo import ZoneInfo

from bgjobs.schedules import CronSchedule, parse_cron, resolve_timezone

from .measure import percentile

UTC = timezone.utc
ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
]
FIELDS = [
    ["0", "30", "*/15", "5,35", "*", "0-10/5", "59", "*/20"],
    ["*", "2", "1-3", "*/2", "0", "23", "9-17", "2,14", "*/3", "1"],
    ["*", "*", "*", "1", "15", "*/2", "1-7", "31", "29", "*/10"],
    ["*", "*", "*", "1", "2,3", "*/3", "jan-jun", "10-12", "3,9,10"],
    ["*", "*", "*", "1", "0", "7", "mon-fri", "*/2", "sat,sun", "1-5/2", "fri-sun"],
]
EXTRA = ["* * * * * *", "*/10 * * * * *", "0 0 29 2 *", "0 0 13 * 5", "@hourly", "30 2 * * *"]


def expressions(count: int = 154) -> List[str]:
    rng = random.Random(12)
    out = list(EXTRA)
    while len(out) < count + len(EXTRA):
        text = " ".join(rng.choice(options) for options in FIELDS)
        try:
            parse_cron("bench", text, UTC)
        except ValueError:
            continue
        if text not in out:
            out.append(text)
    return out


def changes(zone: str) -> List[datetime]:
    tz = ZoneInfo(zone)
    found, t = [], datetime(2026, 1, 1, tzinfo=UTC)
    offset = t.astimezone(tz).utcoffset()
    while t.year == 2026:
        t += timedelta(minutes=15)
        if t.astimezone(tz).utcoffset() != offset:
            offset = t.astimezone(tz).utcoffset()
            found.append(t)
    return found


def timed(schedule: CronSchedule, start: datetime) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        schedule.next_fire(start)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    costs: List[float] = []
    worst = (0.0, "")
    for zone in ZONES:
        tz = resolve_timezone("bench", zone)
        starts = [datetime(2026, m, 1, tzinfo=UTC) for m in range(1, 13)]
        for change in changes(zone):
            starts += [change - timedelta(minutes=30), change - timedelta(seconds=1)]
        for text in expressions():
            schedule = parse_cron("bench", text, tz)
            for start in starts:
                cost = timed(schedule, start)
                costs.append(cost)
                if cost > worst[0]:
                    worst = (cost, f"{text!r} in {zone} after {start.isoformat()}")
    us = [c * 1e6 for c in costs]
    print("| measure | value |\n|---|---|")
    print(f"| next_fire calls | {len(costs)} |")
    for p in (50, 99):
        print(f"| next_fire p{p} | {percentile(us, p):.1f} us |")
    print(f"| next_fire max | {worst[0] * 1e6:.1f} us ({worst[1]}) |")

    every_second = parse_cron("bench", "* * * * * *", resolve_timezone("bench", "Europe/Paris"))
    t, stop, n = (
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        0,
    )
    cpu = time.process_time()
    while t < stop:
        t, n = every_second.next_fire(t), n + 1
    per_call = (time.process_time() - cpu) / n * 1e6
    print(f"| every-second cron across Paris's jump, CPU per next_fire | {per_call:.1f} us |")
    for label, days in (("a day", 1), ("a year", 365)):
        start = datetime(2026, 3, 28, 12, tzinfo=UTC)
        t0 = time.perf_counter()
        counted = every_second.count_fires(start, start + timedelta(days=days))
        took = (time.perf_counter() - t0) * 1e3
        print(f"| counting {label} of missed every-second fires ({counted}) | {took:.2f} ms |")


if __name__ == "__main__":
    main()
