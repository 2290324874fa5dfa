"""What the command line shows on a terminal: ``run``'s live table or plain lines, and logs.

``bgjobs run`` shows its jobs through a :class:`View`, picked by :func:`open_view`:

* on a terminal, a live table of the jobs redrawn in place at 2 Hz, with events — the
  library's warnings and errors, and whatever a job prints — as one line each above it;
* otherwise (a pipe, a file, ``--plain``, ``TERM=dumb``), one line per finished run on
  stdout and the library's log records in full on stderr.

Also here: the log format of ``run`` and ``exec`` (UTC timestamps) and the small text
helpers the command line's messages share (:func:`iso`, :func:`span`, :func:`one_line`...).
"""

from __future__ import annotations

import abc
import contextlib
import io
import logging
import os
import queue
import shutil
import sys
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from .. import _time
from ..execution import BaseJobManager
from ..schedules import format_seconds
from ..types import JobMetrics, JobStatus

__all__ = [
    "View",
    "display_path",
    "exception_location",
    "iso",
    "log_to_stderr",
    "one_line",
    "open_view",
    "plural",
    "span",
    "summary",
    "table",
]

UTC = timezone.utc

_REDRAW = 0.5  # how often the live table is redrawn (2 Hz)


# --- text ------------------------------------------------------------------------------------


def iso(when: datetime, *, fraction: bool = False) -> str:
    """ISO 8601 in UTC with a ``Z``: ``2025-01-31T09:00:00Z``."""
    text = when.astimezone(UTC).isoformat(timespec="milliseconds" if fraction else "seconds")
    return text.replace("+00:00", "Z")


def span(seconds: float) -> str:
    """A short duration: ``0.25s``, ``12s``, ``5m``, ``1h30m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    return format_seconds(float(int(seconds)))


def plural(number: int, noun: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, made one space."""
    return " ".join(text.split())


def display_path(filename: str) -> str:
    """``filename`` relative to the current directory when it is under it."""
    if not os.path.isabs(filename):
        return filename
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith("..") else relative


def exception_location(tb: Optional[TracebackType], *, under: Optional[str] = None) -> str:
    """``file.py:12`` of the innermost traceback frame (the innermost under ``under``, if
    one is), so that a message points at the user's line rather than the library's."""
    frames = traceback.extract_tb(tb)
    if not frames:
        return ""
    chosen = frames[-1]
    if under is not None:
        prefix = os.path.join(os.path.realpath(under), "")
        chosen = next(
            (f for f in reversed(frames) if os.path.realpath(f.filename).startswith(prefix)),
            chosen,
        )
    return f"{display_path(chosen.filename)}:{chosen.lineno}"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()
) -> List[str]:
    """Plain-text columns, two spaces apart; the columns numbered in ``right`` align right."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(headers)] + [line(row) for row in rows]


def _relative(when: Optional[datetime], now: datetime) -> str:
    if when is None:
        return "-"
    delta = (when - now).total_seconds()
    return f"in {span(delta)}" if delta >= 0 else f"{span(-delta)} ago"


def _took(status: JobStatus) -> str:
    if status.runs == 0:
        return "-"
    return f"{status.duration:.2f}s" if status.duration < 60 else span(status.duration)


def _metrics_line(metrics: JobMetrics) -> str:
    return (
        f"{plural(metrics.total_executions, 'run')} ({metrics.successful_jobs} succeeded, "
        f"{metrics.failed_jobs} failed), {metrics.skipped_executions} skipped, "
        f"average {metrics.average_job_duration:.3f}s"
    )


_COLOURS = {"running": "33", "completed": "32", "failed": "31", "stopped": "2", "scheduled": "36"}


def _paint(text: str, code: str, enabled: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if enabled and code and text else text


def _status_table(
    statuses: Sequence[JobStatus], now: datetime, *, colour: bool = False, live: bool = True
) -> List[str]:
    """The job table, one line per job; ``live=False`` drops the status and next-run columns."""
    headers = ["JOB", "SCHEDULE"] + (["STATUS"] if live else []) + ["LAST RUN", "TOOK"]
    headers += (["NEXT RUN"] if live else []) + ["RUNS", "FAILS", "SKIPS"]
    rows: List[List[str]] = []
    for s in statuses:
        row = [s.id, s.schedule] + ([s.status] if live else [])
        row += [_relative(s.last_run, now), _took(s)]
        row += [_relative(s.next_run, now)] if live else []
        row += [str(s.runs), str(s.failures), str(s.skips)]
        rows.append(row)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = len(headers) - 3  # RUNS, FAILS, SKIPS align right

    def line(cells: List[str], status_code: str = "") -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths)):
            padded = cell.rjust(width) if i >= numeric else cell.ljust(width)
            if live and i == 2:
                padded = _paint(padded, status_code, colour)
            out.append(padded)
        return "  ".join(out).rstrip()

    lines = [_paint(line(headers), "1", colour)]
    lines += [line(row, _COLOURS.get(s.status, "")) for row, s in zip(rows, statuses)]
    return lines


def summary(manager: BaseJobManager, reason: str, elapsed: float) -> str:
    """What ``run`` prints last: why it stopped, each job's totals, and the metrics."""
    lines = [f"bgjobs: stopped after {span(elapsed)} ({reason})"]
    statuses = manager.get_all_job_statuses()
    lines += ["  " + line for line in _status_table(statuses, _time.utc_now(), live=False)]
    lines.append(f"Metrics: {_metrics_line(manager.get_job_metrics())}")
    return "\n".join(lines)


# --- logs ------------------------------------------------------------------------------------


def _gmtime(seconds: Optional[float] = None) -> time.struct_time:
    return time.gmtime(seconds)  # typeshed's gmtime does not fit Formatter.converter


class _UTCFormatter(logging.Formatter):
    """Log lines stamped ``2025-01-31T09:00:00Z``."""

    converter = staticmethod(_gmtime)

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")


class _EventFormatter(logging.Formatter):
    """One line per record for the live view: the message, and where an exception came from.

    Tracebacks would push the table off the screen; ``--plain`` logs them in full.
    """

    converter = staticmethod(_gmtime)

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.formatTime(record, '%H:%M:%SZ')} {record.levelname}: {record.getMessage()}"
        if record.exc_info and record.exc_info[2] is not None:
            location = exception_location(record.exc_info[2])
            if location:
                text += f" [{location}]"
        return one_line(text)


class _QueueHandler(logging.Handler):
    """Hands formatted records to the live view, which prints them above the table."""

    def __init__(self, sink: queue.SimpleQueue[str]) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.put(self.format(record))
        except Exception:
            self.handleError(record)


class _LineCapture(io.StringIO):
    """Stands in for ``sys.stdout``/``sys.stderr`` under the live table.

    Complete lines go to ``sink`` and are printed above the table, so a job that prints
    cannot tear the display.
    """

    def __init__(self, sink: queue.SimpleQueue[str]) -> None:
        super().__init__()
        self._sink = sink
        # Guards _partial: jobs on several threads may write at once.
        self._lock = threading.Lock()
        self._partial = ""

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
        for line in lines:
            self._sink.put(line)
        return len(text)

    def close_line(self) -> None:
        """Hand over a last line that never got its newline."""
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._sink.put(rest)


@contextlib.contextmanager
def _bgjobs_logging(handler: logging.Handler, level: int = logging.INFO) -> Iterator[None]:
    """Send the ``bgjobs`` logger's records (at ``level`` and up) to ``handler`` only.

    Propagation is off meanwhile: a root handler set up by the app would print every
    record a second time, and under the live view would write through the table.
    """
    log = logging.getLogger("bgjobs")
    saved = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def log_to_stderr() -> contextlib.AbstractContextManager[None]:
    """Meanwhile, bgjobs' log records (INFO and up, tracebacks in full) go to stderr only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UTCFormatter())
    return _bgjobs_logging(handler)


# --- views -----------------------------------------------------------------------------------


class View(abc.ABC):
    """How ``run`` shows progress; ``run`` calls :meth:`refresh` ten times a second."""

    @abc.abstractmethod
    def refresh(self, manager: BaseJobManager, header: str, *, force: bool = False) -> None:
        """Show what changed; ``header`` says what ``run`` is doing (uptime, stopping...)."""

    @abc.abstractmethod
    def message(self, text: str) -> None:
        """Show one line of news."""

    @abc.abstractmethod
    def intro(self, lines: Sequence[str]) -> None:
        """Say what is starting, unless the view shows it anyway (the live table does)."""


class _PlainView(View):
    """For pipes and files: one line per finished run, found by polling the statuses."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._seen: Dict[str, Tuple[int, int]] = {}  # job id -> (runs, failures) reported

    def message(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def intro(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.message(line)

    def refresh(self, manager: BaseJobManager, header: str, *, force: bool = False) -> None:
        for status in manager.get_all_job_statuses():
            runs, failures = self._seen.get(status.id, (0, 0))
            if status.runs == runs:
                continue
            self._seen[status.id] = (status.runs, status.failures)
            if status.status == "running" or status.last_run is None:
                ended = _time.utc_now()  # the job has started again since
            else:
                ended = status.last_run + timedelta(seconds=status.duration)
            if status.failures > failures:
                error = status.error or "see the log"
                what = f"FAILED after {status.duration:.3f}s: {error}"
            else:
                what = f"completed in {status.duration:.3f}s"
            more = f"run {status.runs}"
            if status.runs - runs > 1:
                more += f", {status.runs - runs} since the last line"
            if status.next_run is not None:
                more += f", next {iso(status.next_run)}"
            self.message(f"{iso(ended)} {status.id}: {what} ({more})")


class _LiveView(View):
    """For terminals: the job table, redrawn in place at 2 Hz, with events printed above it."""

    def __init__(self, out: TextIO, events: queue.SimpleQueue[str], *, colour: bool) -> None:
        self._out = out
        self._events = events
        self._colour = colour
        self._height = 0  # lines of the table currently on screen
        self._drawn_at = 0.0
        out.write("\x1b[?25l")  # hide the cursor while redrawing

    def message(self, text: str) -> None:
        self._events.put(text)

    def intro(self, lines: Sequence[str]) -> None:
        pass  # the table itself lists the jobs

    def _pending(self) -> List[str]:
        lines: List[str] = []
        while True:
            try:
                lines.append(self._events.get_nowait())
            except queue.Empty:
                return lines

    def refresh(self, manager: BaseJobManager, header: str, *, force: bool = False) -> None:
        pending = self._pending()
        now = _time.monotonic()
        if not (pending or force or now - self._drawn_at >= _REDRAW):
            return
        self._drawn_at = now
        width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        table = self._lines(manager, header)
        parts = [self._erase()] + [line + "\n" for line in pending]
        for plain, painted in table:
            parts.append((painted if len(plain) <= width else plain[:width]) + "\n")
        self._out.write("".join(parts))
        self._out.flush()
        self._height = len(table)

    def _lines(self, manager: BaseJobManager, header: str) -> List[Tuple[str, str]]:
        """Each line of the display, without and with colours (the first to measure it)."""
        statuses = manager.get_all_job_statuses()
        now = _time.utc_now()
        plain = _status_table(statuses, now, colour=False)
        painted = _status_table(statuses, now, colour=self._colour)
        footer = [
            "",
            _metrics_line(manager.get_job_metrics()),
            "SKIPS: ticks that found the job still running (bgjobs never runs a job twice at once)",
        ]
        lines = [(header, _paint(header, "1", self._colour)), ("", "")]
        lines += list(zip(plain, painted))
        lines += [(f, _paint(f, "2", self._colour)) for f in footer]
        return lines

    def _erase(self) -> str:
        return f"\x1b[{self._height}A\r\x1b[J" if self._height else ""

    def close(self) -> None:
        """Take the table off the screen (the summary follows) and show the cursor again."""
        events = "".join(line + "\n" for line in self._pending())
        self._out.write(self._erase() + events + "\x1b[?25h")
        self._out.flush()
        self._height = 0


def open_view(stack: contextlib.ExitStack, out: TextIO, *, plain: bool) -> View:
    """Set up ``run``'s output on ``out`` until ``stack`` closes: the view, and the logs.

    The live view, unless ``plain`` or ``out`` is not a terminal (or ``TERM=dumb``):
    WARNING and up become one-line events above the table, and so does whatever a job
    prints (stdout and stderr are captured meanwhile). Plain: records go to stderr, in full.
    """
    if plain or not out.isatty() or os.environ.get("TERM", "") == "dumb":
        stack.enter_context(log_to_stderr())
        return _PlainView(out)
    events: queue.SimpleQueue[str] = queue.SimpleQueue()
    queued = _QueueHandler(events)
    queued.setFormatter(_EventFormatter())
    queued.setLevel(logging.WARNING)  # skips are counted in the table, not narrated
    stack.enter_context(_bgjobs_logging(queued))
    view = _LiveView(out, events, colour="NO_COLOR" not in os.environ)
    stack.callback(view.close)
    captured = _LineCapture(events)
    stack.callback(captured.close_line)
    stack.enter_context(contextlib.redirect_stdout(captured))
    stack.enter_context(contextlib.redirect_stderr(captured))
    return view
