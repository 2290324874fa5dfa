"""The HTML status page the endpoints serve at ``<prefix>/``: a table of jobs and the metrics.

A pure function of the statuses and metrics (:func:`render_status_page`), with inline CSS
and no script, so the page works under :mod:`bgjobs.wsgi`'s strict Content-Security-Policy
and can be tested without a server. Every value is HTML-escaped; times are shown in UTC.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any, List, Mapping, Optional

from .. import _time
from ..schedules import format_seconds
from ..types import JobMetrics, JobStatus

__all__ = ["PAGE_REFRESH_SECONDS", "render_status_page"]

PAGE_REFRESH_SECONDS = 5
"""How often the page reloads itself (``<meta http-equiv="refresh">``), in seconds."""

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 24px; color: #1f2328; background: #f6f8fa; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 24px 0 8px; }
.sub { color: #59636e; margin: 0 0 16px; }
.scroll { overflow-x: auto; background: #fff; border: 1px solid #d1d9e0; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 9px; border-bottom: 1px solid #e6eaef;
         vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; white-space: nowrap; }
tbody tr:last-child td { border-bottom: none; }
tbody tr:hover td { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.time { font-variant-numeric: tabular-nums; min-width: 6.5em; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
td.job { min-width: 10em; }
td.job .name { display: block; font-weight: 600; }
td.job .id { color: #59636e; }
td.error { color: #a40e26; min-width: 14em; overflow-wrap: break-word; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; background: #eaeef2; color: #1f2328; }
.badge.running { background: #ddf4ff; color: #0550ae; }
.badge.completed { background: #dafbe1; color: #116329; }
.badge.failed { background: #ffebe9; color: #a40e26; }
.badge.stopped { background: #eaeef2; color: #59636e; }
.badge.paused { background: #fff8c5; color: #7d4e00; }
td.error .past { color: #59636e; }
.degraded { color: #a40e26; font-weight: 600; }
.runner { display: block; color: #59636e; font-size: 12px; }
.muted { color: #8c959f; }
.nw { white-space: nowrap; }
.empty { color: #59636e; text-align: center; padding: 16px; }
dl.metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr));
             gap: 8px; margin: 0; }
dl.metrics div { background: #fff; border: 1px solid #d1d9e0; border-radius: 6px;
                 padding: 8px 12px; }
dl.metrics dt { color: #59636e; font-size: 12px; }
dl.metrics dd { margin: 0; font-size: 18px; font-weight: 600;
                font-variant-numeric: tabular-nums; }
"""

_COLUMNS = (
    "Job (name, id)",
    "Status",
    "Schedule",
    "Last run (UTC)",
    "Last success (UTC)",
    "Next run (UTC)",
    "Duration",
    "Runs",
    "Fails",
    "Skips",
    "Last error",
)


def _escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time_html(value: Optional[datetime], suffix: str = "") -> str:
    if value is None:
        return '<span class="muted">—</span>'
    utc = value.astimezone(timezone.utc)
    text = utc.strftime("%Y-%m-%d %H:%M:%S") + suffix
    return f'<time datetime="{_escape(utc.isoformat())}">{_escape(text)}</time>'


def _duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3f} s"
    return format_seconds(round(seconds))


def _schedule_html(description: str) -> str:
    """``cron 0 9 * * * (Europe/Paris)``: may wrap before the timezone, never inside the cron."""
    if not description:
        return _time_html(None)
    head, sep, tail = description.partition(" (")
    parts = [head, f"({tail}"] if sep else [head]
    return " ".join(f'<span class="nw">{_escape(part)}</span>' for part in parts)


def _job_row(status: JobStatus) -> str:
    runner = f'<span class="runner">{_escape(status.runner)}</span>' if status.runner else ""
    state = _escape(status.status)
    duration = _escape(_duration_text(status.duration)) if status.runs else _time_html(None)
    problems = [_escape(status.error)] if status.error else []
    if status.last_error and status.last_error != status.error:
        # Kept after later successes: shown muted, with when it happened.
        when = f" at {_time_html(status.last_failure)}" if status.last_failure else ""
        problems.append(f'<span class="past">earlier{when}: {_escape(status.last_error)}</span>')
    if status.last_sync_error:
        problems.append(_escape(f"sync: {status.last_sync_error}"))
    if status.running_pid is not None:
        runner += f'<span class="runner">pid {status.running_pid}</span>'
    if status.waiting_since is not None:
        # Every worker is busy: say so beside the status, or next_run just looks past.
        since = _time_html(status.waiting_since)
        runner += f'<span class="runner">waiting for a worker since {since}</span>'
    cells = (
        f'<td class="job"><span class="name">{_escape(status.name)}</span>'
        f' <code class="id">{_escape(status.id)}</code></td>',
        f'<td><span class="badge {state}">{state}</span>{runner}</td>',
        f'<td class="sched">{_schedule_html(status.schedule)}</td>',
        f'<td class="time">{_time_html(status.last_run)}</td>',
        f'<td class="time">{_time_html(status.last_success)}</td>',
        f'<td class="time">{_time_html(status.next_run)}</td>',
        f'<td class="num">{duration}</td>',
        f'<td class="num">{status.runs}</td>',
        f'<td class="num">{status.failures}</td>',
        f'<td class="num">{status.skips}</td>',
        f'<td class="error">{"<br>".join(problems)}</td>',
    )
    return f'<tr data-job-id="{_escape(status.id)}">{"".join(cells)}</tr>'


def render_status_page(
    statuses: List[JobStatus],
    metrics: JobMetrics,
    *,
    title: str = "bgjobs",
    now: Optional[datetime] = None,
    store: Optional[Mapping[str, Any]] = None,
) -> str:
    """The HTML status page: a table of jobs and the metrics; every value is escaped.

    Inline CSS only and no script; ``<meta http-equiv="refresh">`` reloads the same URL
    (``?token=`` included) every :data:`PAGE_REFRESH_SECONDS` seconds.
    """
    generated = (now or _time.utc_now()).astimezone(timezone.utc)
    if statuses:
        rows = "\n".join(_job_row(s) for s in statuses)
    else:
        rows = f'<tr><td class="empty" colspan="{len(_COLUMNS)}">No jobs scheduled.</td></tr>'
    figures = (
        ("Total executions", str(metrics.total_executions)),
        ("Successful", str(metrics.successful_jobs)),
        ("Failed", str(metrics.failed_jobs)),
        ("Skipped (overlap)", str(metrics.skipped_executions)),
        ("Starved (waited for a worker)", str(metrics.starved_fires)),
        ("Average duration", _duration_text(metrics.average_job_duration)),
    )
    metric_items = "".join(
        f'<div><dt>{label}</dt><dd data-metric="{label}">{value}</dd></div>'
        for label, value in ((_escape(label), _escape(value)) for label, value in figures)
    )
    header = "".join(f"<th>{_escape(c)}</th>" for c in _COLUMNS)
    if store is None:
        shared = "this process only (no state directory)"
    elif store.get("degraded"):
        shared = f'<span class="degraded">state store degraded: {_escape(store["degraded"])}</span>'
    else:
        shared = f"host-wide, from {_escape(store.get('path', ''))}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{PAGE_REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{_escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_escape(title)}</h1>
<p class="sub">{len(statuses)} job(s) · generated {_time_html(generated, " UTC")} · refreshes \
every {PAGE_REFRESH_SECONDS} s · metrics since {_time_html(metrics.last_cleanup, " UTC")} · \
{shared}</p>
<div class="scroll"><table>
<thead><tr>{header}</tr></thead>
<tbody>
{rows}
</tbody>
</table></div>
<h2>Metrics</h2>
<dl class="metrics">{metric_items}</dl>
</body>
</html>
"""
