"""What the state store costs through ``LocalJobManager``, memory only vs ``state_dir=``.

Budget (issue): per-run overhead added by the store ≤ 0.5 ms at p50; statuses of 1,000 jobs
read from the store in ≤ 20 ms; "the timer thread never waits on the database".

    python -m benchmarks.manager_overhead              # prints markdown tables
    python -m benchmarks.manager_overhead --runs 5000 --fire-jobs 500

Three measurements, each on a fresh manager (the store one in a fresh temporary state
directory: ``state.db`` plus the per-job lock files, as shipped):

* **trigger_job** of a no-op job, ``--runs`` times per manager, the two managers
  alternating in blocks of 100 so machine noise falls on both alike. The store's cost is
  the p50 difference; the time spent inside the store's own methods is shown too (the rest
  of the difference is the host-wide run lock file, ``job-<id>.lock``).
* **get_all_job_statuses()** of ``--jobs`` jobs that each ran once, ``--reads`` reads.
* **Scheduled fires**: ``--fire-jobs`` jobs every ``--fire-interval`` s for
  ``--fire-seconds``; lateness at job entry against the grid, process CPU per fire, the
  CPU of the waiting thread (the one named exactly ``bgjobs``) per fire, and which threads
  touched the database: every store method is wrapped and SQLite's trace callback is set,
  both recording ``threading.current_thread().name``. The script fails if the waiting
  thread ever did. Run twice more with ``schedule_job`` called at a common ``--pace``:
  back to back, the memory-only manager schedules 1,000 jobs in 15 ms and its fires come
  in one burst, which costs less CPU per fire than the store's, spread over its slower
  scheduling (lock files and records); at one pace both have the same spread.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional

from bgjobs.local import LocalJobManager
from bgjobs.store import StateStore

from .measure import percentile

mono = time.monotonic
WAITER = "bgjobs"
"""The timer queue's waiting thread (``TimerQueue(name="bgjobs")``); workers are
``bgjobs-worker`` and take the job's name (``bgjobs-<job id>``) while a run lasts."""

STORE_METHODS = [
    "start_run",
    "finish_run",
    "get_run",
    "job_runs",
    "claim_fire",
    "claim_key",
    "release_key",
    "record_skips",
    "set_next_run",
    "set_paused",
    "job",
    "jobs",
    "totals",
    "abandon_dead_runs",
    "prune",
]


class StoreSpy:
    """Wraps every method of a manager's store (and SQLite's trace callback) to record
    which threads touch the database, and how long each store call takes."""

    def __init__(self, store: StateStore) -> None:
        self.lock = threading.Lock()
        self.threads: Counter[str] = Counter()
        self.sql_threads: Counter[str] = Counter()
        self.seconds: Dict[str, List[float]] = {}
        self.store = store
        for name in STORE_METHODS:
            setattr(store, name, self._wrap(name, getattr(store, name)))
        conn = getattr(store, "_conn", None)
        if isinstance(conn, sqlite3.Connection):
            conn.set_trace_callback(self._sql)
        self.conn = conn

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        seconds = self.seconds.setdefault(name, [])

        @functools.wraps(method)
        def spy(*args: Any, **kwargs: Any) -> Any:
            thread = threading.current_thread().name
            begin = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                took = time.perf_counter() - begin
                with self.lock:
                    self.threads[thread] += 1
                    seconds.append(took)

        return spy

    def _sql(self, statement: str) -> None:
        name = threading.current_thread().name
        with self.lock:
            self.sql_threads[name] += 1

    def reset(self) -> None:
        with self.lock:
            self.threads.clear()
            self.sql_threads.clear()
            for values in self.seconds.values():
                values.clear()

    def same_connection(self) -> bool:
        return getattr(self.store, "_conn", None) is self.conn


def _noop() -> None:
    pass


def _ms(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 1000:.3f}"


def _manager(state_dir: Optional[str]) -> LocalJobManager:
    return LocalJobManager() if state_dir is None else LocalJobManager(state_dir=state_dir)


# --- 1. trigger_job ------------------------------------------------------------------------


def bench_trigger(runs: int, tmp: str) -> Dict[str, Any]:
    managers = {"memory": _manager(None), "store": _manager(os.path.join(tmp, "trigger"))}
    for m in managers.values():
        m.schedule_job("noop", "noop", _noop, 3600)
    spy = StoreSpy(managers["store"].store)  # type: ignore[arg-type]
    took: Dict[str, List[float]] = {name: [] for name in managers}
    for m in managers.values():  # warm up: schema, caches, the first prunes
        for _ in range(200):
            m.trigger_job("noop")
    spy.reset()
    block = 100
    for start in range(0, runs, block):
        for name, m in managers.items():
            trigger, out, clock = m.trigger_job, took[name], time.perf_counter
            for _ in range(min(block, runs - start)):
                begin = clock()
                ran = trigger("noop")
                out.append(clock() - begin)
                assert ran
    in_store = [a + b for a, b in zip(spy.seconds["start_run"], spy.seconds["finish_run"])]
    store = managers["store"].store
    assert store is not None and store.degraded is None and store.dropped_writes == 0
    for m in managers.values():
        m.shutdown()
    return {"took": took, "in_store": in_store}


# --- 2. statuses ---------------------------------------------------------------------------


def bench_statuses(jobs: int, reads: int, tmp: str) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {}
    for name, state_dir in (("memory", None), ("store", os.path.join(tmp, "statuses"))):
        m = _manager(state_dir)
        for i in range(jobs):
            m.schedule_job(f"job-{i}", f"job {i}", _noop, 3600)
            m.trigger_job(f"job-{i}")  # a record with a last run, counts, outcome
        for _ in range(2):
            m.get_all_job_statuses()
        took = []
        for _ in range(reads):
            begin = time.perf_counter()
            statuses = m.get_all_job_statuses()
            took.append(time.perf_counter() - begin)
            assert len(statuses) == jobs
        out[name] = took
        if m.store is not None:
            store_jobs = m.store.jobs
            out["store.jobs() alone"] = []
            for _ in range(reads):
                begin = time.perf_counter()
                store_jobs()
                out["store.jobs() alone"].append(time.perf_counter() - begin)
        m.shutdown()
    return out


# --- 3. scheduled fires --------------------------------------------------------------------


def _thread_cpu(thread: Optional[threading.Thread]) -> Optional[float]:
    if thread is None or thread.ident is None or not hasattr(time, "pthread_getcpuclockid"):
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:  # the thread ended
        return None


def bench_fires(
    n: int,
    interval: float,
    seconds: float,
    state_dir: Optional[str],
    *,
    spy_on: bool = False,
    pace: float = 0.0,
) -> Dict[str, Any]:
    """``pace``: seconds between the starts of two ``schedule_job`` calls (0: back to back).
    The due times follow the scheduling, so back to back the memory-only manager's fires
    come in one burst (15 µs per job) and the store's spread over its slower scheduling
    (lock files, records): a burst costs less CPU per fire (workers find the next fire
    without sleeping). A common pace compares both at the same spread of due times."""
    m = _manager(state_dir)
    spy = StoreSpy(m.store) if spy_on and m.store is not None else None
    fires: List[List[float]] = [[] for _ in range(n)]
    funcs = [fires[i].append for i in range(n)]

    def job_for(record: Callable[[float], None]) -> Callable[[], None]:
        def job() -> None:
            record(mono())

        return job

    jobs = [job_for(f) for f in funcs]
    gc.collect()
    t0s = [0.0] * n
    cpu_schedule = time.process_time()
    began = mono()
    for i in range(n):
        while pace and mono() < began + i * pace:
            pass  # busy: a sleep this short oversleeps
        t0s[i] = mono()
        m.schedule_job(f"job-{i}", f"job {i}", jobs[i], interval)
    cpu0 = time.process_time()  # the fires' CPU only, not scheduling (lock files, records)
    cpu_schedule = cpu0 - cpu_schedule
    waiter = m._timers._waiter  # the one thread named exactly "bgjobs"
    assert waiter is not None and waiter.name == WAITER, waiter
    waiter_cpu0 = _thread_cpu(waiter)
    end = mono() + seconds + 0.2
    while mono() < end:
        time.sleep(end - mono())
    # The waiter exits when nothing is armed and a new one starts: then its CPU is unknown.
    waiter_cpu1 = _thread_cpu(waiter) if m._timers._waiter is waiter else None
    cpu = time.process_time() - cpu0
    m.stop_all_jobs(wait=True, timeout=5)
    per_job = round(seconds / interval)
    late = []
    count = 0
    for i in range(n):
        got = fires[i][:per_job]
        count += len(got)
        late.extend(t - (t0s[i] + (k + 1) * interval) for k, t in enumerate(got))
    result: Dict[str, Any] = {
        "fires": count,
        "due": n * per_job,
        "late_p50": percentile(late, 50),
        "late_p99": percentile(late, 99),
        "cpu_per_fire": cpu / max(count, 1),
        "schedule_cpu_per_job": cpu_schedule / n,
        "waiter_cpu_per_fire": (
            None
            if waiter_cpu0 is None or waiter_cpu1 is None
            else (waiter_cpu1 - waiter_cpu0) / max(count, 1)
        ),
    }
    if spy is not None:
        result.update(
            threads=dict(spy.threads),
            sql_threads=dict(spy.sql_threads),
            same_connection=spy.same_connection(),
            store_seconds={k: v for k, v in spy.seconds.items() if v},
        )
        store = m.store
        assert store is not None
        result["degraded"] = store.degraded
        result["dropped_writes"] = store.dropped_writes
    m.shutdown()
    return result


def _thread_kinds(names: Dict[str, int]) -> str:
    kinds: Counter[str] = Counter()
    for name, count in names.items():
        if name == WAITER:
            kinds["bgjobs (the waiting thread!)"] += count
        elif name.startswith("bgjobs-job-") or name == "bgjobs-worker":
            kinds["pool workers (bgjobs-<job id> / bgjobs-worker)"] += count
        else:
            kinds[name] += count
    return ", ".join(f"{k}: {v}" for k, v in kinds.most_common())


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="trigger_job runs per manager")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs for the status read")
    parser.add_argument("--reads", type=int, default=20, help="get_all_job_statuses() reads")
    parser.add_argument("--fire-jobs", type=int, default=1000, help="scheduled jobs")
    parser.add_argument("--fire-interval", type=float, default=1.0, help="their interval (s)")
    parser.add_argument("--fire-seconds", type=float, default=5.0, help="how long they run")
    parser.add_argument(
        "--pace",
        type=float,
        default=0.0002,
        help="seconds between schedule_job calls for the same-pace comparison",
    )
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="bgjobs-bench-mgr-")
    try:
        trig = bench_trigger(args.runs, tmp)
        stat = bench_statuses(args.jobs, args.reads, tmp)
        fire_args = (args.fire_jobs, args.fire_interval, args.fire_seconds)
        fires = {
            "memory": bench_fires(*fire_args, None),
            "store": bench_fires(*fire_args, os.path.join(tmp, "fires")),
            "memory, same pace": bench_fires(*fire_args, None, pace=args.pace),
            "store, same pace": bench_fires(*fire_args, os.path.join(tmp, "paced"), pace=args.pace),
            # Again with every store call and SQL statement recorded (slower: not timed).
            "store, spied": bench_fires(*fire_args, os.path.join(tmp, "spied"), spy_on=True),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    print(
        f"**manager overhead** — {time.strftime('%Y-%m-%d %H:%M:%S %Z')} · Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version} · {platform.platform()}"
        f" · {os.cpu_count()} CPUs · load avg before "
        f"{[round(x, 2) for x in load_before]}, after {[round(x, 2) for x in load_after]}\n"
    )
    mem = trig["took"]["memory"]
    p50 = {k: percentile(v, 50) for k, v in trig["took"].items()}
    p99 = {k: percentile(v, 99) for k, v in trig["took"].items()}
    overhead = p50["store"] - p50["memory"]  # type: ignore[operator]
    print(f"`trigger_job` of a no-op job, {len(mem)} runs per manager (ms):\n")
    print("| manager | p50 | p99 |")
    print("|---|---:|---:|")
    print(f"| memory only | {_ms(p50['memory'])} | {_ms(p99['memory'])} |")
    print(f"| state_dir (store) | {_ms(p50['store'])} | {_ms(p99['store'])} |")
    print(
        f"| inside the store (start_run + finish_run) | {_ms(percentile(trig['in_store'], 50))}"
        f" | {_ms(percentile(trig['in_store'], 99))} |"
    )
    verdict = "met" if overhead <= 0.0005 else "MISSED"
    print(
        f"\nPer-run overhead at p50: {_ms(overhead)} ms (target ≤ 0.5 ms: {verdict}); p99 "
        f"difference {_ms(p99['store'] - p99['memory'])} ms.\n"  # type: ignore[operator]
    )

    print(
        f"`get_all_job_statuses()` of {args.jobs} jobs that each ran once, "
        f"{args.reads} reads (ms):\n"
    )
    print("| manager | p50 | p99 |")
    print("|---|---:|---:|")
    for name, values in stat.items():
        print(f"| {name} | {_ms(percentile(values, 50))} | {_ms(percentile(values, 99))} |")
    s50 = percentile(stat["store"], 50)
    print(
        f"\nStatuses from the store at p50: {_ms(s50)} ms (target ≤ 20 ms: "
        f"{'met' if s50 is not None and s50 <= 0.020 else 'MISSED'}).\n"
    )

    print(
        f"Scheduled fires: {args.fire_jobs} jobs every {args.fire_interval:g} s for "
        f"{args.fire_seconds:g} s:\n"
    )
    print(
        "| manager | fires | lateness p50 (ms) | p99 (ms) | CPU per fire (µs) "
        "| waiter CPU per fire (µs) | schedule_job CPU per job (µs) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in fires.items():
        if name == "store, spied":
            continue
        waiter = r["waiter_cpu_per_fire"]
        print(
            f"| {name} | {r['fires']}/{r['due']} | {_ms(r['late_p50'])} | {_ms(r['late_p99'])} | "
            f"{r['cpu_per_fire'] * 1e6:.1f} | {'n/a' if waiter is None else f'{waiter * 1e6:.1f}'} "
            f"| {r['schedule_cpu_per_job'] * 1e6:.1f} |"
        )
    cpu_ratio = fires["store"]["cpu_per_fire"] / fires["memory"]["cpu_per_fire"]
    paced = fires["store, same pace"]["cpu_per_fire"] / fires["memory, same pace"]["cpu_per_fire"]
    print(
        f"\nCPU per fire, store / memory: {cpu_ratio:.2f}x scheduled back to back; "
        f"{paced:.2f}x at the same pace (one schedule_job per {args.pace * 1e6:.0f} µs)\n"
    )
    store_fires = fires["store, spied"]
    print(
        "Store calls during the scheduled fires, a second store run with every call "
        f"recorded ({store_fires['fires']}/{store_fires['due']} fires; wall time per call, "
        "GIL waits included; p50 / p99 ms, calls):\n"
    )
    for name, values in sorted(store_fires["store_seconds"].items()):
        print(
            f"- `{name}`: {_ms(percentile(values, 50))} / {_ms(percentile(values, 99))}, "
            f"{len(values)}"
        )
    print(f"\nThreads that called the store: {_thread_kinds(store_fires['threads'])}")
    print(f"Threads that ran SQL: {_thread_kinds(store_fires['sql_threads'])}")
    touched = WAITER in store_fires["threads"] or WAITER in store_fires["sql_threads"]
    print(
        f"The waiting thread {'TOUCHED' if touched else 'never touched'} the database "
        f"(trace callback on the same connection throughout: {store_fires['same_connection']};"
        f" degraded: {store_fires['degraded']}, dropped writes: {store_fires['dropped_writes']})."
    )
    return 1 if touched else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
