"""Small measuring helpers shared by the scenarios: percentiles, slopes, /proc readings."""

from __future__ import annotations

import math
import statistics
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = [
    "ProcSampler",
    "percentile",
    "proc_status",
    "rss_kib",
    "slope",
    "split_errors",
    "thread_count",
]


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The ``q``-th percentile (0 to 100) with linear interpolation; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def slope(ys: Sequence[float]) -> Optional[float]:
    """Theil-Sen slope of ``ys`` against their index (units of y per step): the median of
    the slopes between every pair of points. Unlike least squares, a few late fires caused
    by the machine (a descheduled VM) do not pass for drift; a real trend still shows."""
    n = len(ys)
    if n < 2:
        return None
    pairs = [(ys[j] - ys[i]) / (j - i) for i in range(n) for j in range(i + 1, n)]
    return statistics.median(pairs)


def proc_status(*keys: str) -> Dict[str, int]:
    """Integer fields of ``/proc/self/status`` (``VmRSS`` in KiB, ``Threads``)."""
    wanted = set(keys)
    out: Dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in wanted:
                    out[name] = int(rest.split()[0])
    except OSError:  # not Linux: fall back to what Python can see
        if "Threads" in wanted:
            out["Threads"] = threading.active_count()
    return out


def rss_kib() -> int:
    """Resident set size of this process in KiB (0 where /proc is missing)."""
    return proc_status("VmRSS").get("VmRSS", 0)


def thread_count() -> int:
    """OS threads of this process (``Threads`` in /proc/self/status)."""
    return proc_status("Threads").get("Threads", threading.active_count())


class ProcSampler:
    """A daemon thread that samples thread count and RSS every ``period`` seconds.

    It keeps the peaks and its own CPU time (``time.thread_time``), which scenarios
    subtract from the process's CPU so the sampler does not count against the system.
    """

    def __init__(self, period: float = 0.02) -> None:
        self.period = period
        self.peak_threads = 0
        self.peak_rss_kib = 0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def _sample(self) -> None:
        values = proc_status("Threads", "VmRSS")
        self.peak_threads = max(self.peak_threads, values.get("Threads", 0))
        self.peak_rss_kib = max(self.peak_rss_kib, values.get("VmRSS", 0))

    def _loop(self) -> None:
        start = time.thread_time()
        while True:
            self._sample()
            self.cpu = time.thread_time() - start
            if self._stop.wait(self.period):
                break

    def __enter__(self) -> ProcSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def split_errors(errors: List[str], limit: int = 3) -> Tuple[int, List[str]]:
    """How many errors, and the first few distinct messages."""
    distinct: List[str] = []
    for message in errors:
        if message not in distinct:
            distinct.append(message)
        if len(distinct) >= limit:
            break
    return len(errors), distinct
