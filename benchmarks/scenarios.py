"""The benchmark scenarios. Each runs inside a fresh child process (``run_one``) and
returns a JSON-able dict ``{"metrics": {...}, "info": {...}, "errors": [...]}``.

Lateness is ``time.monotonic()`` at job entry minus the ideal due time
``t0 + k * interval``, where ``t0`` is ``time.monotonic()`` read just before the
scheduling call and ``k`` counts the job's runs (1, 2, ...). Systems that re-anchor
after every run (``schedule``, the Timer chain) drift against that grid by design; the
one-job scenario also reports lateness against each system's *own* intended time.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .measure import ProcSampler, percentile, rss_kib, slope, split_errors, thread_count
from .systems import SYSTEMS, System, load_system

__all__ = [
    "DEFAULT_TIMEOUT",
    "METRICS",
    "PARAMS",
    "SCENARIOS",
    "TIMEOUTS",
    "Metric",
    "run_scenario",
]

Result = Dict[str, Any]
mono = time.monotonic


@dataclass(frozen=True)
class Metric:
    """How one reported number reads in the table."""

    key: str
    label: str
    #: "lower" / "higher" is better, "abs" = closer to zero is better, "" = no ranking.
    better: str
    fmt: str = ".3f"


# Parameters of the full run and of --quick.
PARAMS: Dict[str, Dict[str, Dict[str, float]]] = {
    "full": {
        "one_job": {"n": 250, "interval": 0.02},
        "many_1k": {"n": 1000, "interval": 1.0, "duration": 5.0},
        "many_10k": {"n": 10000, "interval": 5.0, "duration": 15.0},
        "idle": {"n": 1000, "window": 5.0},
        "overlap": {"interval": 0.05, "run": 0.12, "duration": 2.0},
        "stop": {"n": 1000, "interval": 0.5, "bursts": 2},
        "exit_live": {"n": 1000, "interval": 0.5, "bursts": 2},
        "import": {"reps": 5},
    },
    "quick": {
        "one_job": {"n": 50, "interval": 0.02},
        "many_1k": {"n": 1000, "interval": 0.5, "duration": 1.0},
        "many_10k": {"n": 2000, "interval": 1.0, "duration": 2.0},
        "idle": {"n": 1000, "window": 1.0},
        "overlap": {"interval": 0.05, "run": 0.12, "duration": 0.6},
        "stop": {"n": 300, "interval": 0.25, "bursts": 2},
        "exit_live": {"n": 300, "interval": 0.25, "bursts": 2},
        "import": {"reps": 1},
    },
}

# Fires later than this after the window's last due time count as "did not happen".
_GRACE = 0.5

TIMEOUTS = {"many_10k": 40.0, "many_1k": 40.0}
"""Seconds a child may take before the parent kills it (default: ``DEFAULT_TIMEOUT``)."""
DEFAULT_TIMEOUT = 30.0


# --- helpers -------------------------------------------------------------------------------


class _ThreadErrors:
    """Collects exceptions that escape threads (e.g. ``can't start new thread``)."""

    def __init__(self) -> None:
        self.messages: List[str] = []
        threading.excepthook = self._hook

    def _hook(self, args: Any) -> None:
        self.messages.append(f"{args.exc_type.__name__}: {args.exc_value}")


def _recorder(times: List[float]) -> Callable[[], None]:
    append = times.append

    def job() -> None:
        append(mono())

    return job


def _sleep_until(deadline: float) -> None:
    while True:
        remaining = deadline - mono()
        if remaining <= 0:
            return
        time.sleep(remaining)


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else seconds * 1000.0


def _errors(thread_errors: _ThreadErrors, extra: List[str]) -> List[str]:
    count, first = split_errors(thread_errors.messages)
    out = list(extra)
    if count:
        out.append(f"{count} exception(s) in threads, e.g. {first}")
    return out


def _add_all(
    system: System, n: int, interval: float, funcs: List[Callable[[], None]]
) -> Tuple[List[float], int, Optional[str]]:
    """Schedule ``n`` jobs; returns each job's t0, how many were added, and the error."""
    t0s = [0.0] * n
    for i in range(n):
        t0s[i] = mono()
        try:
            system.add_interval_job(f"job-{i}", interval, funcs[i])
        except Exception as exc:
            return t0s, i, f"add_interval_job failed at job {i}: {type(exc).__name__}: {exc}"
    return t0s, n, None


# --- scenarios -----------------------------------------------------------------------------


def one_job(system_name: str, p: Dict[str, float]) -> Result:
    """One job every 20 ms: lateness, drift, first-fire error, CPU."""
    n, interval = int(p["n"]), p["interval"]
    errs = _ThreadErrors()
    system = load_system(system_name)
    times: List[float] = []
    owns: List[Optional[float]] = []
    own_due = system.own_due

    def job() -> None:
        times.append(mono())
        owns.append(own_due("job"))

    gc.collect()
    cpu0 = time.process_time()
    t0 = mono()
    system.add_interval_job("job", interval, job)
    _sleep_until(t0 + n * interval + 0.002)
    deadline = t0 + n * interval * 1.5 + 1.0  # room for the drifting systems
    while len(times) < n and mono() < deadline:
        time.sleep(0.005)
    cpu = time.process_time() - cpu0
    system.stop()

    fired = times[:n]
    late = [t - (t0 + (k + 1) * interval) for k, t in enumerate(fired)]
    own_late = [
        t - (own if own is not None else t0 + (k + 1) * interval)
        for k, (t, own) in enumerate(zip(fired, owns))
    ]
    slope_s = slope(late)
    return {
        "metrics": {
            "late_p50_ms": _ms(percentile(late, 50)),
            "late_p99_ms": _ms(percentile(late, 99)),
            "late_max_ms": _ms(max(late) if late else None),
            "drift_last_ms": _ms(late[-1] if late else None),
            "drift_slope_us": None if slope_s is None else slope_s * 1e6,
            "first_fire_ms": _ms(late[0] if late else None),
            "own_late_p99_ms": _ms(percentile(own_late, 99)),
            "cpu_s": cpu,
            "fires": len(fired),
        },
        "info": {"expected_fires": n, "grid": system.grid},
        "errors": _errors(errs, [] if len(fired) == n else [f"only {len(fired)} of {n} fires"]),
    }


def _many(system_name: str, p: Dict[str, float]) -> Result:
    n, interval, duration = int(p["n"]), p["interval"], p["duration"]
    per_job = round(duration / interval)
    errs = _ThreadErrors()
    system = load_system(system_name)
    fires: List[List[float]] = [[] for _ in range(n)]
    funcs = [_recorder(f) for f in fires]  # built before the RSS baseline: harness, not system
    gc.collect()
    time.sleep(0.05)
    rss0 = rss_kib()
    with ProcSampler(0.02) as sampler:
        cpu0 = time.process_time()
        start = mono()
        t0s, added, add_error = _add_all(system, n, interval, funcs)
        schedule_s = mono() - start
        window_end = mono() + duration + _GRACE
        _sleep_until(window_end)
        cpu = time.process_time() - cpu0 - sampler.cpu
    stop_start = mono()
    system.stop()
    stop_s = mono() - stop_start

    late: List[float] = []
    happened = 0
    for i in range(added):
        got = [t for t in fires[i][:per_job] if t <= window_end]
        happened += len(got)
        late.extend(t - (t0s[i] + (k + 1) * interval) for k, t in enumerate(got))
    fraction = happened / (n * per_job)
    overshoot = mono() - window_end
    extra = [add_error] if add_error else []
    if overshoot > 0.5:
        extra.append(f"process starved: the main thread woke {overshoot:.1f} s after the window")
    if fraction < 1:
        extra.append(f"{n * per_job - happened} of {n * per_job} fires did not happen in time")
    return {
        "metrics": {
            "fraction": fraction,
            "late_p50_ms": _ms(percentile(late, 50)),
            "late_p99_ms": _ms(percentile(late, 99)),
            "peak_threads": sampler.peak_threads,
            "rss_per_job_kib": (sampler.peak_rss_kib - rss0) / n,
            "cpu_s": cpu,
            "schedule_s": schedule_s,
            "thread_errors": len(errs.messages),
        },
        "info": {
            "jobs": n,
            "window_overshoot_s": overshoot,
            "added": added,
            "fires_per_job": per_job,
            "stop_s": stop_s,
            "misfires": getattr(system, "misfires", None),
        },
        "errors": _errors(errs, extra),
    }


def many_1k(system_name: str, p: Dict[str, float]) -> Result:
    """1,000 jobs every 1 s for 5 s."""
    return _many(system_name, p)


def many_10k(system_name: str, p: Dict[str, float]) -> Result:
    """10,000 jobs every 5 s for 15 s."""
    return _many(system_name, p)


def idle(system_name: str, p: Dict[str, float]) -> Result:
    """1,000 jobs due in an hour: CPU over the window (scaled to 5 s), RSS per job."""
    n, window = int(p["n"]), p["window"]
    errs = _ThreadErrors()
    system = load_system(system_name)
    funcs = [_recorder([]) for _ in range(n)]
    gc.collect()
    time.sleep(0.05)
    rss0 = rss_kib()
    _, added, add_error = _add_all(system, n, 3600.0, funcs)
    time.sleep(0.3)
    cpu0 = time.process_time()
    time.sleep(window)
    cpu = (time.process_time() - cpu0) * 5.0 / window
    rss1 = rss_kib()
    threads = thread_count()
    system.stop()
    return {
        "metrics": {
            "idle_cpu_s": cpu,
            "rss_per_job_kib": (rss1 - rss0) / n,
            "threads": threads,
        },
        "info": {"window_s": window, "added": added},
        "errors": _errors(errs, [add_error] if add_error else []),
    }


def overlap(system_name: str, p: Dict[str, float]) -> Result:
    """A 120 ms job every 50 ms: it must never run twice at once."""
    interval, run, duration = p["interval"], p["run"], p["duration"]
    errs = _ThreadErrors()
    system = load_system(system_name)
    lock = threading.Lock()
    state = {"current": 0, "max": 0, "runs": 0}

    def job() -> None:
        with lock:
            state["current"] += 1
            state["runs"] += 1
            state["max"] = max(state["max"], state["current"])
        time.sleep(run)
        with lock:
            state["current"] -= 1

    system.add_interval_job("slow", interval, job)
    time.sleep(duration)
    system.stop()
    return {
        "metrics": {
            "max_concurrent": state["max"],
            "runs": state["runs"],
            "skips": system.skips() if system.reports_skips else None,
        },
        "info": {"ticks_due": int(duration / interval), "protection": system.overlap_protection},
        "errors": _errors(errs, []),
    }


def _live_jobs(system_name: str, p: Dict[str, float]) -> Tuple[System, List[float], _ThreadErrors]:
    n, interval = int(p["n"]), p["interval"]
    errs = _ThreadErrors()
    system = load_system(system_name)
    entries: List[float] = []
    funcs = [_recorder(entries)] * n
    start = mono()
    _, _, add_error = _add_all(system, n, interval, funcs)
    if add_error:
        errs.messages.append(add_error)
    # The jobs fire in bursts as long as scheduling them took; act in the middle of one.
    _sleep_until(start + p["bursts"] * interval + (mono() - start) / 2)
    return system, entries, errs


def stop(system_name: str, p: Dict[str, float]) -> Result:
    """Stop 1,000 live jobs in the middle of a burst of fires: how long stop() takes, and
    runs that start after it returned. The parent adds the interpreter's exit time."""
    system, entries, errs = _live_jobs(system_name, p)
    before = len(entries)
    t_call = mono()
    system.stop()
    t_return = mono()
    time.sleep(max(0.5, 2.5 * p["interval"]))
    snapshot = list(entries)
    return {
        "metrics": {
            "stop_ms": (t_return - t_call) * 1000.0,
            "runs_after_stop": sum(1 for t in snapshot if t > t_return),
            "exit_ms": None,  # filled in by the parent from the EXIT_MARK line
        },
        "info": {"runs_before_stop": before, "runs_total": len(snapshot)},
        "errors": _errors(errs, []),
    }


def exit_live(system_name: str, p: Dict[str, float]) -> Result:
    """Leave 1,000 live jobs scheduled and let the interpreter exit (``exit_ms``)."""
    _, entries, errs = _live_jobs(system_name, p)
    return {
        "metrics": {"exit_ms": None},
        "info": {"runs": len(entries)},
        "errors": _errors(errs, []),
    }


def _import_ms(statement: str) -> float:
    """Import time of ``statement`` from a bare interpreter (``-S -X importtime``): the sum
    of the cumulative times of the top-level modules it imported."""
    paths = [path for path in sys.path if path]
    spec = importlib.util.find_spec("bgjobs")
    if spec is not None and spec.origin:  # an editable install may use a finder, not a path
        paths.append(os.path.dirname(os.path.dirname(spec.origin)))
    code = (
        f"import sys; sys.path.extend({paths!r}); sys.stderr.write('@@MARK@@\\n'); "
        f"sys.stderr.flush(); {statement}"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    total_us = 0
    seen_mark = False
    for line in proc.stderr.splitlines():
        if line.strip() == "@@MARK@@":
            seen_mark = True
            continue
        if not seen_mark or not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) != 3 or parts[2].startswith("  "):  # nested: already in a parent's sum
            continue
        try:
            total_us += int(parts[1])
        except ValueError:  # the header line
            continue
    return total_us / 1000.0


def import_cost(system_name: str, p: Dict[str, float]) -> Result:
    """``import X`` cost (``python -S -X importtime``), median of ``reps`` fresh interpreters."""
    spec = SYSTEMS[system_name]
    reps = int(p["reps"])
    first = [_import_ms(spec.import_statement) for _ in range(reps)]
    use = spec.use_statement or spec.import_statement
    second = [_import_ms(use) for _ in range(reps)]
    return {
        "metrics": {"import_ms": statistics.median(first), "use_ms": statistics.median(second)},
        "info": {"import": spec.import_statement, "use": use},
        "errors": [],
    }


SCENARIOS: Dict[str, Callable[[str, Dict[str, float]], Result]] = {
    "one_job": one_job,
    "many_1k": many_1k,
    "many_10k": many_10k,
    "idle": idle,
    "overlap": overlap,
    "stop": stop,
    "exit_live": exit_live,
    "import": import_cost,
}
"""Every scenario, in table order."""

METRICS: Dict[str, List[Metric]] = {
    "one_job": [
        Metric("late_p50_ms", "lateness p50 (ms)", "lower"),
        Metric("late_p99_ms", "lateness p99 (ms)", "lower"),
        Metric("late_max_ms", "lateness max (ms)", "lower"),
        Metric("drift_last_ms", "drift: lateness of last fire (ms)", "abs"),
        Metric("drift_slope_us", "drift slope (µs/fire)", "abs", ".2f"),
        Metric("first_fire_ms", "first-fire error (ms)", "abs"),
        Metric("own_late_p99_ms", "lateness p99 vs own intended time (ms)", "lower"),
        Metric("cpu_s", "CPU (s)", "lower"),
        Metric("fires", "fires", "higher", ".0f"),
    ],
    "many_1k": [],
    "many_10k": [],
    "idle": [
        Metric("idle_cpu_s", "CPU per 5 s (s)", "lower", ".4f"),
        Metric("rss_per_job_kib", "RSS per job (KiB)", "lower", ".1f"),
        Metric("threads", "threads", "lower", ".0f"),
    ],
    "overlap": [
        Metric("max_concurrent", "max concurrent runs", "lower", ".0f"),
        Metric("runs", "runs", "", ".0f"),
        Metric("skips", "skips reported", "", ".0f"),
    ],
    "stop": [
        Metric("stop_ms", "stop() call (ms)", "lower", ".1f"),
        Metric("runs_after_stop", "runs started after stop() returned", "lower", ".0f"),
        Metric("exit_ms", "interpreter exit after stop (ms)", "lower", ".1f"),
    ],
    "exit_live": [Metric("exit_ms", "interpreter exit, jobs still live (ms)", "lower", ".1f")],
    "import": [
        Metric("import_ms", "`import` (ms)", "lower", ".1f"),
        Metric("use_ms", "import what you use (ms)", "lower", ".1f"),
    ],
}
_MANY = [
    Metric("fraction", "fraction of fires that happened", "higher", ".4f"),
    Metric("late_p50_ms", "lateness p50 (ms)", "lower", ".2f"),
    Metric("late_p99_ms", "lateness p99 (ms)", "lower", ".2f"),
    Metric("peak_threads", "peak threads", "lower", ".0f"),
    Metric("rss_per_job_kib", "RSS per job (KiB)", "lower", ".1f"),
    Metric("cpu_s", "CPU (s)", "lower", ".2f"),
    Metric("schedule_s", "time to schedule all (s)", "lower", ".3f"),
    Metric("thread_errors", "exceptions in threads", "lower", ".0f"),
]
METRICS["many_1k"] = list(_MANY)
METRICS["many_10k"] = list(_MANY)


def run_scenario(system_name: str, scenario: str, mode: str) -> Result:
    """Run one scenario for one system in this process (meant to be a fresh child)."""
    return SCENARIOS[scenario](system_name, PARAMS[mode][scenario])
