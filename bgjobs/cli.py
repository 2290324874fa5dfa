"""The ``bgjobs`` command line (also ``python -m bgjobs``): run, inspect and dispatch jobs.

::

    bgjobs run examples/quickstart.py             # schedule locally; live table; Ctrl-C stops
    bgjobs list myapp.jobs                        # each job, its schedule, next three fire times
    bgjobs exec myapp/jobs.py repository-sync     # run one job once: exit 0 ok, 1 failed
    bgjobs vercel-json myapp.jobs:jobs            # the "crons" array for vercel.json

APP names a :class:`~bgjobs.registry.JobRegistry`; :func:`load_registry` explains the forms.
Exit status: 0 success, 1 a job failed (or ``run`` had to abandon a running job), 2 a usage
error — bad APP, unknown job, a schedule the target cannot express — reported as exactly one
``bgjobs: error: ...`` line on stderr, never a traceback.

Each subcommand is one row of :data:`COMMANDS`: a function adding its arguments and a
handler taking the parsed arguments and returning the exit status. ``sync`` (Trigger.dev)
is added the same way.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import queue
import re
import shutil
import signal
import sys
import textwrap
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import FrameType, ModuleType, TracebackType
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from . import __version__
from .errors import BGJobsError, InvalidScheduleError
from .execution import ManagedJobs
from .local import LocalJobManager
from .registry import JobDefinition, JobRegistry
from .schedules import IntervalSchedule, format_seconds, parse_cron, resolve_timezone
from .types import JobMetrics, JobStatus
from .vercel import vercel_crons

__all__ = [
    "COMMANDS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "AppLoadError",
    "Command",
    "UsageError",
    "build_parser",
    "load_registry",
    "main",
]

UTC = timezone.utc

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_STEP = 0.1  # how often ``run`` checks for signals and finished runs
_REDRAW = 0.5  # how often the live table is redrawn (2 Hz)


class AppLoadError(BGJobsError):
    """APP could not be turned into a :class:`JobRegistry`. The message is one line."""


class UsageError(BGJobsError):
    """A mistake on the command line other than APP (unknown job, bad setting). One line."""


# --- APP loading ------------------------------------------------------------------------

_APP_HELP = """\
APP is one of
  pkg.module            a module importable from the current directory
  pkg.module:attribute  a JobRegistry attribute of that module (dots allowed)
  path/to/file.py       a file; its directory is put on sys.path first, so it can
                        import its siblings (a file inside a package is imported
                        as part of that package)
Without :attribute, the module's JobRegistry named "jobs" is used, else its only one."""


def load_registry(spec: str) -> JobRegistry:
    """Import APP (``pkg.module``, ``pkg.module:attribute`` or ``path/to/file.py``) and
    return its :class:`JobRegistry`.

    Without ``:attribute`` the module-level registry named ``jobs`` is used, else the only
    ``JobRegistry`` in the module. A file is imported under a name of its own (so
    ``jobs.py`` cannot shadow or be shadowed by another ``jobs`` module) after its
    directory is put on ``sys.path``; a file inside a package (its directory has an
    ``__init__.py``) is imported by its dotted name from the package root instead, as
    ``flask --app`` does, so its relative imports work. Raises :class:`AppLoadError` with
    a one-line message for every user mistake, including exceptions raised by the import.
    """
    text = spec.strip()
    if not text:
        raise AppLoadError("APP is empty; give a module (pkg.jobs), module:attribute or a .py file")
    target, attribute = _split_attribute(text)
    if _looks_like_path(target):
        module = _import_file(target)
    elif _is_dotted_name(target):
        module = _import_module(target)
    else:
        raise AppLoadError(
            f"{target!r} is neither a .py file nor a module name; "
            "give pkg.module, pkg.module:attribute or path/to/file.py"
        )
    if attribute is not None:
        return _registry_attribute(module, target, attribute)
    return _find_registry(module, target)


def _split_attribute(spec: str) -> Tuple[str, Optional[str]]:
    target, sep, attribute = spec.rpartition(":")
    # "C:\\app\\jobs.py" is a Windows drive, not module:attribute.
    if sep and target and _is_dotted_name(attribute) and not re.fullmatch(r"[A-Za-z]", target):
        return target, attribute
    return spec, None


def _is_dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _looks_like_path(target: str) -> bool:
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    return (
        target.endswith(".py") or any(sep in target for sep in separators) or os.path.isfile(target)
    )


def _import_file(target: str) -> ModuleType:
    path = os.path.realpath(target)
    if os.path.isdir(path):
        raise AppLoadError(
            f"{target!r} is a directory; give a .py file in it or a module name (pkg.jobs)"
        )
    if not os.path.isfile(path):
        hint = f" (did you mean {target + '.py'!r}?)" if os.path.isfile(path + ".py") else ""
        raise AppLoadError(f"no such file: {target!r}{hint}")
    directory = os.path.dirname(path)
    if os.path.isfile(os.path.join(directory, "__init__.py")):
        root, dotted = _package_import_name(path)
        _prepend_sys_path(root)
        module = _import_module(dotted, shown=target, root=root)
        loaded = getattr(module, "__file__", None)
        if loaded is None or os.path.realpath(loaded) != path:
            raise AppLoadError(
                f"{target!r} is module {dotted!r} of its package, but that name is already "
                f"imported from {loaded!r}"
            )
        return module

    _prepend_sys_path(directory)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"bgjobs_app_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    if name in sys.modules:  # the same file, loaded earlier in this process
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {target!r}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as a normal import does
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise AppLoadError(_import_failure(target, exc, directory)) from None
    return module


def _package_import_name(path: str) -> Tuple[str, str]:
    """``(directory to put on sys.path, dotted module name)`` for a file inside a package."""
    base = os.path.splitext(path)[0]
    if os.path.basename(base) == "__init__":
        base = os.path.dirname(base)
    parts: List[str] = []
    while True:
        base, name = os.path.split(base)
        parts.append(name)
        if not os.path.isfile(os.path.join(base, "__init__.py")):
            return base, ".".join(reversed(parts))


def _prepend_sys_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _import_module(
    name: str, *, shown: Optional[str] = None, root: Optional[str] = None
) -> ModuleType:
    shown = shown or name
    if root is None:
        # Like `python -m` (and unlike a console script), find modules in the current directory.
        root = os.getcwd()
        _prepend_sys_path(root)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if name == missing or name.startswith(missing + "."):
            raise AppLoadError(
                f"no module named {missing!r} (APP is pkg.module, pkg.module:attribute or "
                "path/to/file.py; modules are looked up from the current directory)"
            ) from None
        raise AppLoadError(_import_failure(shown, exc, root)) from None
    except (Exception, SystemExit) as exc:
        raise AppLoadError(_import_failure(shown, exc, root)) from None


def _import_failure(shown: str, exc: BaseException, root: str) -> str:
    if isinstance(exc, SystemExit):
        return (
            f"importing {shown!r} called sys.exit({exc.code!r}); "
            "guard that code with if __name__ == '__main__':"
        )
    where = ""
    if not isinstance(exc, SyntaxError):  # a SyntaxError's message already says where
        location = _user_location(exc.__traceback__, root)
        where = f" ({location})" if location else ""
    return f"importing {shown!r} failed: {_one_line(_describe_exception(exc))}{where}"


def _describe_exception(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _user_location(tb: Optional[TracebackType], root: str) -> str:
    """``file.py:12`` of the innermost traceback frame under ``root`` (else the innermost)."""
    frames = traceback.extract_tb(tb)
    if not frames:
        return ""
    prefix = os.path.join(os.path.realpath(root), "")
    chosen = next(
        (f for f in reversed(frames) if os.path.realpath(f.filename).startswith(prefix)),
        frames[-1],
    )
    return f"{_display_path(chosen.filename)}:{chosen.lineno}"


def _display_path(filename: str) -> str:
    """``filename`` relative to the current directory when it is under it."""
    if not os.path.isabs(filename):
        return filename
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith("..") else relative


def _registry_attribute(module: ModuleType, target: str, attribute: str) -> JobRegistry:
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AppLoadError(f"{target!r} has no attribute {attribute!r}") from None
    if not isinstance(value, JobRegistry):
        raise AppLoadError(f"{target}:{attribute} is a {type(value).__name__}, not a JobRegistry")
    return value


def _find_registry(module: ModuleType, target: str) -> JobRegistry:
    named = getattr(module, "jobs", None)
    if isinstance(named, JobRegistry):
        return named
    found: Dict[int, Tuple[str, JobRegistry]] = {}
    for name, value in vars(module).items():
        if isinstance(value, JobRegistry):
            found.setdefault(id(value), (name, value))  # one registry under two names is one
    if len(found) == 1:
        return next(iter(found.values()))[1]
    if not found:
        raise AppLoadError(
            f"no JobRegistry in {target!r}; declare one as 'jobs = JobRegistry()' "
            "or point at it with APP:attribute"
        )
    names = sorted(name for name, _ in found.values())
    raise AppLoadError(
        f"{target!r} has {len(names)} JobRegistry objects ({', '.join(names)}); "
        f"choose one with {target}:{names[0]}"
    )


# --- small formatting helpers -------------------------------------------------------------


def _iso(when: datetime, *, fraction: bool = False) -> str:
    """ISO 8601 in UTC with a ``Z``: ``2025-01-31T09:00:00Z``."""
    text = when.astimezone(UTC).isoformat(timespec="milliseconds" if fraction else "seconds")
    return text.replace("+00:00", "Z")


def _span(seconds: float) -> str:
    """A short duration: ``0.25s``, ``12s``, ``5m``, ``1h30m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    return format_seconds(float(int(seconds)))


def _relative(when: Optional[datetime], now: datetime) -> str:
    if when is None:
        return "-"
    delta = (when - now).total_seconds()
    return f"in {_span(delta)}" if delta >= 0 else f"{_span(-delta)} ago"


def _took(status: JobStatus) -> str:
    if status.runs == 0:
        return "-"
    return f"{status.duration:.2f}s" if status.duration < 60 else _span(status.duration)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _metrics_line(metrics: JobMetrics) -> str:
    return (
        f"{_count(metrics.total_executions, 'run')} ({metrics.successful_jobs} succeeded, "
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
        row += ([_relative(s.next_run, now)] if live else []) + [
            str(s.runs),
            str(s.failures),
            str(s.skips),
        ]
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


# --- output for `run` -----------------------------------------------------------------


def _gmtime(seconds: Optional[float] = None) -> time.struct_time:
    return time.gmtime(seconds)


class _UTCFormatter(logging.Formatter):
    """Log lines stamped ``2025-01-31T09:00:00Z``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        self.converter = _gmtime


class _EventFormatter(logging.Formatter):
    """One line per record for the live view: the message, and where an exception came from.

    Tracebacks would push the table off the screen; ``--plain`` logs them in full.
    """

    def __init__(self) -> None:
        super().__init__()
        self.converter = _gmtime

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.formatTime(record, '%H:%M:%SZ')} {record.levelname}: {record.getMessage()}"
        if record.exc_info and record.exc_info[2] is not None:
            frames = traceback.extract_tb(record.exc_info[2])
            if frames:
                text += f" [{_display_path(frames[-1].filename)}:{frames[-1].lineno}]"
        return _one_line(text)


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


class _StopSignals:
    """Counts SIGINT/SIGTERM instead of dying; the run loop polls :attr:`count`.

    The handler only assigns two attributes, which is safe wherever the main thread was
    interrupted (setting an Event there could deadlock on the Event's own lock).
    """

    def __init__(self) -> None:
        self.count = 0
        self.last: Optional[str] = None

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.count += 1
        self.last = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopSignals]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        saved = [(sig, signal.getsignal(sig)) for sig in (signal.SIGINT, signal.SIGTERM)]
        for sig, _ in saved:
            signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, previous in saved:
                # None: the previous handler was not set from Python; the default is closest.
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


class _View(abc.ABC):
    """How ``run`` shows progress; :meth:`refresh` is called every :data:`_STEP` seconds."""

    @abc.abstractmethod
    def refresh(self, manager: ManagedJobs, header: str, *, force: bool = False) -> None:
        """Show what changed; ``header`` says what ``run`` is doing (uptime, stopping...)."""

    @abc.abstractmethod
    def message(self, text: str) -> None:
        """Show one line of news."""


class _PlainView(_View):
    """For pipes and files: one line per finished run, found by polling the statuses."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._seen: Dict[str, Tuple[int, int]] = {}  # job id -> (runs, failures) reported

    def message(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def refresh(self, manager: ManagedJobs, header: str, *, force: bool = False) -> None:
        for status in manager.get_all_job_statuses():
            runs, failures = self._seen.get(status.id, (0, 0))
            if status.runs == runs:
                continue
            self._seen[status.id] = (status.runs, status.failures)
            if status.status == "running" or status.last_run is None:
                ended = datetime.now(UTC)  # the job has started again since
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
                more += f", next {_iso(status.next_run)}"
            self.message(f"{_iso(ended)} {status.id}: {what} ({more})")


class _LiveView(_View):
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

    def _pending(self) -> List[str]:
        lines: List[str] = []
        while True:
            try:
                lines.append(self._events.get_nowait())
            except queue.Empty:
                return lines

    def refresh(self, manager: ManagedJobs, header: str, *, force: bool = False) -> None:
        pending = self._pending()
        now = time.monotonic()
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

    def _lines(self, manager: ManagedJobs, header: str) -> List[Tuple[str, str]]:
        statuses = manager.get_all_job_statuses()
        now = datetime.now(UTC)
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


def _wants_live(out: TextIO, plain: bool) -> bool:
    return not plain and out.isatty() and os.environ.get("TERM", "") != "dumb"


# --- subcommands ----------------------------------------------------------------------


def _add_app(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="APP", help="module, module:attribute or .py file")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_app(parser)
    parser.add_argument(
        "--duration",
        metavar="SECONDS",
        type=_positive_seconds,
        help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="log lines instead of the live table (the default when stdout is not a terminal)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    duration: Optional[float] = args.duration
    registry = load_registry(args.app)
    app = _display_path(args.app)
    if not len(registry):
        raise UsageError(f"{app!r} declares no jobs; there is nothing to run")
    try:
        # Reads and checks BGJOBS_SHUTDOWN_TIMEOUT, BGJOBS_LOCK_DIR and BGJOBS_TIMEZONE.
        manager = LocalJobManager()
    except (ValueError, BGJobsError) as exc:
        raise UsageError(str(exc)) from None
    out = sys.stdout
    stop = _StopSignals()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        view = _open_view(stack, out, live=_wants_live(out, args.plain))
        stack.enter_context(stop.installed())
        try:
            registry.apply(manager)
        except BaseException:
            manager.stop_all_jobs()
            raise
        if isinstance(view, _PlainView):
            until = f" for {_span(duration)}" if duration else ""
            view.message(
                f"bgjobs: running {_count(len(registry), 'job')} from {app}{until} "
                "(Ctrl-C or SIGTERM stops)"
            )
            statuses = manager.get_all_job_statuses()
            width = max(len(s.id) for s in statuses)
            for status in statuses:
                view.message(f"  {status.id.ljust(width)}  {status.schedule}")

        deadline = started + duration if duration is not None else None
        limit = f" of {_span(duration)}" if duration else ""
        while stop.count == 0:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            uptime = f"up {_span(now - started)}{limit}"
            header = f"bgjobs run {app} · {_count(len(registry), 'job')} · {uptime} · Ctrl-C stops"
            view.refresh(manager, header)
            time.sleep(_STEP if deadline is None else min(_STEP, deadline - now))
        reason = "duration reached" if stop.count == 0 else f"{stop.last} received"
        abandoned, why = _shut_down(manager, view, stop, reason)
        view.refresh(manager, f"bgjobs run {app} · stopped ({reason})", force=True)
    _summary(manager, out, reason, time.monotonic() - started)
    if not abandoned:
        return EXIT_OK
    print(f"bgjobs: gave up waiting for {', '.join(abandoned)} ({why})", file=sys.stderr)
    # At interpreter exit LocalJobManager would wait for these runs once more (its exit
    # hook gives them BGJOBS_SHUTDOWN_TIMEOUT again): end the process now, as asked.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_FAILED)


def _open_view(stack: contextlib.ExitStack, out: TextIO, *, live: bool) -> _View:
    """Set up ``run``'s output until ``stack`` closes: the view, and bgjobs' log records.

    Plain: records go to stderr, in full. Live: WARNING and up become one-line events
    above the table, and so does whatever a job prints (stdout/stderr are captured).
    """
    if not live:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_UTCFormatter())
        stack.enter_context(_bgjobs_logging(handler))
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


def _shut_down(
    manager: LocalJobManager, view: _View, stop: _StopSignals, reason: str
) -> Tuple[List[str], str]:
    """Stop scheduling and wait for running jobs; return those abandoned, and why.

    The wait is :meth:`LocalJobManager.shutdown` (at most ``BGJOBS_SHUTDOWN_TIMEOUT``),
    on a helper thread so that the view keeps refreshing and a further signal can give
    up at once.
    """
    signals_seen = stop.count
    finished: List[bool] = []
    waiter = threading.Thread(
        target=lambda: finished.append(manager.shutdown()),
        name="bgjobs-cli-shutdown",
        daemon=True,
    )
    waiter.start()
    began = time.monotonic()
    announced = False
    while True:
        waiter.join(_STEP)
        running = manager.running_job_ids()
        if not waiter.is_alive():
            return ([], "") if finished and finished[0] else (running, "shutdown timeout passed")
        if stop.count > signals_seen:
            return running, f"second signal: {stop.last}"
        if not running:
            continue
        names = ", ".join(running)
        if not announced:
            view.message(
                f"bgjobs: stopping ({reason}): no new runs; waiting for {names} to finish "
                "(Ctrl-C again to quit now)"
            )
            announced = True
        waited = _span(time.monotonic() - began)
        view.refresh(
            manager, f"stopping ({reason}) · waiting {waited} for {names} · Ctrl-C again quits"
        )


def _summary(manager: ManagedJobs, out: TextIO, reason: str, elapsed: float) -> None:
    lines = [f"bgjobs: stopped after {_span(elapsed)} ({reason})"]
    lines += [
        "  " + line
        for line in _status_table(manager.get_all_job_statuses(), datetime.now(UTC), live=False)
    ]
    lines.append(f"Metrics: {_metrics_line(manager.get_job_metrics())}")
    print("\n".join(lines), file=out, flush=True)


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    _add_app(parser)


def _schedule_and_fires(
    definition: JobDefinition, now: datetime, count: int
) -> Tuple[str, List[datetime]]:
    """The schedule's description and its next ``count`` fire times after ``now``.

    An interval counts from when the scheduler starts, so its times assume it starts now.
    """
    if definition.interval is not None:
        step = definition.interval
        times = [now + timedelta(seconds=step * k) for k in range(1, count + 1)]
        return IntervalSchedule(step).description, times
    assert definition.cron is not None
    tz = resolve_timezone(definition.id, definition.timezone)
    schedule = parse_cron(definition.id, definition.cron, tz)
    times = []
    after = now
    for _ in range(count):
        after = schedule.next_fire(after)
        times.append(after)
    return schedule.description, times


def _cmd_list(args: argparse.Namespace) -> int:
    app: str = args.app
    registry = load_registry(app)
    if not len(registry):
        print(f"{app}: no jobs declared")
        return EXIT_OK
    now = datetime.now(UTC)
    rows = []
    for definition in registry:
        description, fires = _schedule_and_fires(definition, now, 3)
        fraction = definition.interval is not None and definition.interval % 1 != 0
        rows.append(
            (definition.id, description, "  ".join(_iso(t, fraction=fraction) for t in fires))
        )
    id_width = max(len("JOB"), *(len(r[0]) for r in rows))
    schedule_width = max(len("SCHEDULE"), *(len(r[1]) for r in rows))
    print(f"{'JOB'.ljust(id_width)}  {'SCHEDULE'.ljust(schedule_width)}  NEXT FIRE TIMES (UTC)")
    for job_id, description, times in rows:
        print(f"{job_id.ljust(id_width)}  {description.ljust(schedule_width)}  {times}")
    if any(d.interval is not None for d in registry):
        print(
            "(an interval counts from when the scheduler starts: these times assume it starts now)"
        )
    return EXIT_OK


def _exec_arguments(parser: argparse.ArgumentParser) -> None:
    _add_app(parser)
    parser.add_argument("job_id", metavar="JOB_ID", help="the id of the job to run")


def _cmd_exec(args: argparse.Namespace) -> int:
    app: str = args.app
    job_id: str = args.job_id
    registry = load_registry(app)
    definition = registry.get(job_id)
    if definition is None:
        known = ", ".join(d.id for d in registry) or "none"
        raise UsageError(f"no job {job_id!r} in {app} (its jobs: {known})")
    # The execution core alone: ManagedJobs starts no timers and no threads (that is what
    # LocalJobManager adds), so the one installed job runs only through dispatch() — the
    # path the HTTP endpoint and Trigger.dev take: overlap lock, status, metrics, logging.
    manager = ManagedJobs()
    definition.schedule_on(manager)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UTCFormatter())
    with _bgjobs_logging(handler):
        outcome, status = manager.dispatch(job_id)
    assert status is not None  # installed just above
    if outcome != "ran":
        print(f"{job_id}: not run ({outcome})")
        return EXIT_FAILED
    if status.status == "failed":
        print(f"{job_id}: failed after {status.duration:.3f}s: {status.error}")
        return EXIT_FAILED
    print(f"{job_id}: {status.status} in {status.duration:.3f}s")
    return EXIT_OK


def _vercel_json_arguments(parser: argparse.ArgumentParser) -> None:
    _add_app(parser)
    parser.add_argument(
        "--prefix",
        default="/api/cron",
        help="URL prefix of the dispatch endpoints (default: /api/cron)",
    )


def _cmd_vercel_json(args: argparse.Namespace) -> int:
    registry = load_registry(args.app)
    crons = vercel_crons(registry, args.prefix)  # InvalidScheduleError: one line, exit 2
    print(json.dumps({"crons": crons}, indent=2))
    return EXIT_OK


def _sync_arguments(parser: argparse.ArgumentParser) -> None:
    _add_app(parser)
    parser.add_argument(
        "--prune",
        action="store_true",
        help="also delete this environment's bgjobs schedules whose job is no longer in APP",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="give up after this long (default: 120)",
    )


def _cmd_sync(args: argparse.Namespace) -> int:
    # Imported here: the trigger-dev runtime needs requests, which other commands never load.
    from .errors import TriggerDevError
    from .triggerdev import sync_registry

    registry = load_registry(args.app)
    try:
        report = sync_registry(registry, prune=args.prune, timeout=args.timeout)
    except ValueError as exc:  # not configured (no key, bad URL) or a bad schedule
        raise UsageError(str(exc)) from None
    except (TriggerDevError, TimeoutError) as exc:
        _error(str(exc))
        return EXIT_FAILED
    for line in report.lines():
        print(line)
    print(
        f"{len(report.created)} created, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged, {len(report.removed)} removed"
    )
    return EXIT_OK


# --- the command table ---------------------------------------------------------------

Handler = Callable[[argparse.Namespace], int]
"""Runs a subcommand with its parsed arguments; returns the exit status."""


@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure`` adds its arguments, ``handler`` runs it.

    A handler reports user mistakes by raising :class:`AppLoadError`, :class:`UsageError`
    or :class:`~bgjobs.errors.InvalidScheduleError`; :func:`main` prints them as one line
    and exits 2.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Handler
    description: str = ""


COMMANDS: Tuple[Command, ...] = (
    Command(
        "run",
        "schedule APP's jobs in this process and show runs as they happen",
        _run_arguments,
        _cmd_run,
        "Schedule APP's jobs on a LocalJobManager and run them in the foreground. "
        "Ctrl-C or SIGTERM stops scheduling, waits for running jobs (at most "
        "BGJOBS_SHUTDOWN_TIMEOUT seconds, default 10) and prints the metrics; a second "
        "signal stops waiting. On a terminal the jobs are shown in a live table, "
        "otherwise as one line per finished run.",
    ),
    Command(
        "list",
        "show each job, its schedule and its next three fire times",
        _list_arguments,
        _cmd_list,
    ),
    Command(
        "exec",
        "run one job once, now (exit 0 if it succeeded, 1 if it failed)",
        _exec_arguments,
        _cmd_exec,
        "Run one job once through the execution core, print its final status and exit "
        "0 if it succeeded, 1 if it failed (its traceback is logged to stderr).",
    ),
    Command(
        "sync",
        "register APP's schedules with Trigger.dev (the deploy step)",
        _sync_arguments,
        _cmd_sync,
        "Create or update one Trigger.dev schedule per job of APP (key "
        "bgjobs:<TRIGGER_DEV_ENVIRONMENT>:<job id>), leaving unchanged ones untouched, and "
        "print what it created, updated, left and removed. Needs TRIGGER_DEV_API_KEY. "
        "Exit 0 on success, 1 if Trigger.dev refused or failed, 2 for a usage error.",
    ),
    Command(
        "vercel-json",
        'print the "crons" entries for vercel.json',
        _vercel_json_arguments,
        _cmd_vercel_json,
        'Print {"crons": [...]} for vercel.json: one entry per job, calling its '
        "dispatch endpoint PREFIX/<job id> on the job's schedule.",
    ),
)
"""Every subcommand, in the order ``--help`` lists them."""


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser for ``commands``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="bgjobs",
        description="Run, inspect and dispatch the recurring jobs of an app's JobRegistry.",
        epilog=_APP_HELP,
        formatter_class=formatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"bgjobs {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True
    )
    for command in commands:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            # Wrapped here: the raw formatter that keeps _APP_HELP's layout would not.
            description=textwrap.fill(
                command.description or command.help[:1].upper() + command.help[1:] + ".", 80
            ),
            epilog=_APP_HELP,
            formatter_class=formatter,
        )
        command.configure(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _error(message: str) -> None:
    print(f"bgjobs: error: {_one_line(message)}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse printed
        return (
            exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else EXIT_USAGE
        )
    handler: Handler = args.handler
    try:
        return handler(args)
    except (AppLoadError, UsageError, InvalidScheduleError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C outside `run`, which handles it itself
        print("bgjobs: interrupted", file=sys.stderr, flush=True)
        return 130
