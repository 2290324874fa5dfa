"""What the state store adds to a run, and how fast a 1,000-job status read is.

Budget (issue): per-run overhead ≤ 0.5 ms at p50 (one ``start_run`` + ``finish_run``);
statuses of 1,000 jobs read from the store (``jobs()``) in ≤ 20 ms.

    python -m benchmarks.store_overhead            # prints a markdown table
    python -m benchmarks.store_overhead --runs 20000

SQLiteStore runs on a file in a fresh temporary directory (WAL, synchronous=NORMAL, as
shipped); MemoryStore is the floor. Timings are ``time.perf_counter`` around each call.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from typing import Callable, List, Tuple

from bgjobs.schedules import utc_datetime
from bgjobs.store import MemoryStore, SQLiteStore, StateStore
from bgjobs.types import JobRun

from .measure import percentile


def _run_pair(store: StateStore, count: int, jobs: int) -> List[float]:
    """Seconds per start_run + finish_run of one run record."""
    took: List[float] = []
    pid, host = os.getpid(), platform.node()
    t0 = time.time()
    for i in range(count):
        started = utc_datetime(t0 + i)
        run = JobRun(
            f"run-{i}", f"job-{i % jobs}", "schedule", started, started, pid=pid, host=host
        )
        done = dataclasses.replace(run, outcome="completed", finished=started, duration=0.001)
        begin = time.perf_counter()
        store.start_run(run)
        store.finish_run(done)
        took.append(time.perf_counter() - begin)
    return took


def _timed(call: Callable[[], object], repeat: int) -> List[float]:
    took = []
    for _ in range(repeat):
        begin = time.perf_counter()
        call()
        took.append(time.perf_counter() - begin)
    return took


def _row(name: str, values: List[float]) -> Tuple[str, str, str, str]:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    assert p50 is not None and p99 is not None
    return name, f"{p50 * 1000:.3f}", f"{p99 * 1000:.3f}", str(len(values))


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="run records per store")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs for the jobs() read")
    parser.add_argument("--reads", type=int, default=50, help="jobs() reads timed")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bgjobs-bench-") as tmp:
        stores: List[Tuple[str, StateStore]] = [
            ("MemoryStore", MemoryStore()),
            ("SQLiteStore", SQLiteStore(os.path.join(tmp, "state.db"))),
        ]
        for name, store in stores:
            _run_pair(store, 200, 50)  # warm up: schema, caches, the first prune
            rows.append(_row(f"{name}: start_run + finish_run", _run_pair(store, args.runs, 50)))
        for name, store in stores:
            for j in range(args.jobs - len(store.jobs())):  # the warm-up made some
                store.set_next_run(f"status-{j}", utc_datetime(time.time() + j))
            rows.append(
                _row(f"{name}: jobs() of {len(store.jobs())} jobs", _timed(store.jobs, args.reads))
            )
            assert store.degraded is None and store.dropped_writes == 0
            store.close()

    print(
        f"Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}, "
        f"{platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n"
    )
    print("| operation | p50 ms | p99 ms | samples |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
