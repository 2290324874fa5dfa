"""The ``<prefix>/metrics`` answer: statuses and metrics in Prometheus' text format 0.0.4.

A pure function of the statuses and metrics (:func:`render_metrics`), like the HTML page.
Per-job series carry a ``job`` label; a timestamp series has no sample for a job that has
no such time yet (Prometheus' convention for "unknown", rather than a misleading 0).
Format: https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

from ..types import JobMetrics, JobStatus

__all__ = ["PROMETHEUS_TYPE", "escape_label_value", "render_metrics"]

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Number = Union[int, float]


def escape_label_value(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: Number) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _timestamp(value: Optional[datetime]) -> Optional[float]:
    return value.timestamp() if value is not None else None


class _Exposition:
    """Collects families in order; each gets its ``# HELP`` and ``# TYPE`` lines once."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def family(
        self,
        name: str,
        kind: str,
        doc: str,
        samples: Sequence[Tuple[Sequence[Tuple[str, str]], Optional[Number]]],
    ) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(doc)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            label_text = ",".join(f'{key}="{escape_label_value(text)}"' for key, text in labels)
            series = f"{name}{{{label_text}}}" if label_text else name
            self.lines.append(f"{series} {_number(value)}")

    def per_job(
        self,
        name: str,
        kind: str,
        doc: str,
        statuses: Sequence[JobStatus],
        value: Callable[[JobStatus], Optional[Number]],
    ) -> None:
        self.family(name, kind, doc, [((("job", s.id),), value(s)) for s in statuses])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(
    statuses: Sequence[JobStatus],
    metrics: JobMetrics,
    store: Optional[Mapping[str, Any]] = None,
) -> str:
    """The exposition text: per-job series (label ``job``), the manager's totals, and the
    state store's health when there is one (``store``: ``BaseJobManager.store_health()``)."""
    out = _Exposition()
    out.family(
        "bgjobs_runs_total",
        "counter",
        "Finished runs of each job, by outcome.",
        [
            sample
            for s in statuses
            for sample in (
                ((("job", s.id), ("outcome", "completed")), max(s.runs - s.failures, 0)),
                ((("job", s.id), ("outcome", "failed")), s.failures),
            )
        ],
    )
    out.per_job(
        "bgjobs_skips_total",
        "counter",
        "Runs of each job skipped because it was still running.",
        statuses,
        lambda s: s.skips,
    )
    out.per_job(
        "bgjobs_starved_fires_total",
        "counter",
        "Fires of each job that waited too long for a free worker (this process).",
        statuses,
        lambda s: s.starved_fires,
    )
    out.per_job(
        "bgjobs_job_running",
        "gauge",
        "1 while the job is running, else 0.",
        statuses,
        lambda s: int(s.status == "running" or s.running_pid is not None),
    )
    out.per_job(
        "bgjobs_job_timed_out",
        "gauge",
        "1 while the job's run is past its timeout, or its last run ended timed out.",
        statuses,
        lambda s: int(s.timed_out),
    )
    out.per_job(
        "bgjobs_job_paused",
        "gauge",
        "1 while the job is paused, else 0.",
        statuses,
        lambda s: int(s.status == "paused"),
    )
    out.per_job(
        "bgjobs_last_run_timestamp_seconds",
        "gauge",
        "When the job's last run started (Unix time).",
        statuses,
        lambda s: _timestamp(s.last_run),
    )
    out.per_job(
        "bgjobs_last_success_timestamp_seconds",
        "gauge",
        "When the job's last successful run started (Unix time).",
        statuses,
        lambda s: _timestamp(s.last_success),
    )
    out.per_job(
        "bgjobs_next_run_timestamp_seconds",
        "gauge",
        "When the job runs next (Unix time); absent when nothing is scheduled.",
        statuses,
        lambda s: _timestamp(s.next_run),
    )
    out.per_job(
        "bgjobs_last_duration_seconds",
        "gauge",
        "How long the job's last finished run took.",
        statuses,
        lambda s: s.duration if s.runs else None,
    )
    totals: Tuple[Tuple[str, str, str, Number], ...] = (
        ("bgjobs_executions_total", "counter", "Runs of every job.", metrics.total_executions),
        (
            "bgjobs_successful_executions_total",
            "counter",
            "Runs of every job that completed.",
            metrics.successful_jobs,
        ),
        (
            "bgjobs_failed_executions_total",
            "counter",
            "Runs of every job that failed.",
            metrics.failed_jobs,
        ),
        (
            "bgjobs_skipped_executions_total",
            "counter",
            "Runs of every job skipped because that job was still running.",
            metrics.skipped_executions,
        ),
        (
            "bgjobs_timed_out_executions_total",
            "counter",
            "Runs (in this process) that ran past their job's timeout; also counted as failed.",
            metrics.timed_out_executions,
        ),
        (
            "bgjobs_average_duration_seconds",
            "gauge",
            "Mean duration of every run.",
            metrics.average_job_duration,
        ),
        (
            "bgjobs_metrics_since_timestamp_seconds",
            "gauge",
            "Since when the totals count (Unix time).",
            metrics.last_cleanup.timestamp(),
        ),
    )
    for name, kind, doc, value in totals:
        out.family(name, kind, doc, [((), value)])
    if store is not None:
        out.family(
            "bgjobs_state_store_degraded",
            "gauge",
            "1 while the state store is unusable (statuses are this process's only), else 0.",
            [((), int(bool(store.get("degraded"))))],
        )
        out.family(
            "bgjobs_state_store_dropped_writes_total",
            "counter",
            "Writes the state store could not take (kept in this process's memory instead).",
            [((), int(store.get("dropped_writes") or 0))],
        )
    return out.text()
