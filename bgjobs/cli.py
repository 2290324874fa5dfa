"""The ``bgjobs`` command line (also ``python -m bgjobs``): run, inspect and dispatch jobs.

::

    bgjobs run examples/quickstart.py             # schedule locally; live table; Ctrl-C stops
    bgjobs list myapp.jobs                        # each job, its schedule, next three fire times
    bgjobs exec myapp/jobs.py repository-sync     # run one job once: exit 0 ok, 1 failed
    bgjobs exec myapp/app.py:create_app repository-sync   # ...inside a Flask app's context
    bgjobs sync myapp.jobs --prune                # register the schedules with Trigger.dev
    bgjobs vercel-json myapp.jobs:jobs --plan hobby  # the "crons" array for vercel.json
    bgjobs status myapp.jobs                      # every job on this host: runs, errors, pid
    bgjobs runs myapp.jobs repository-sync        # its last runs, newest first (--json)
    bgjobs pause myapp.jobs repository-sync       # no runs on this host until resumed
    bgjobs resume myapp.jobs repository-sync

APP names a :class:`~bgjobs.registry.JobRegistry` or a Flask app with the bgjobs extension;
:mod:`bgjobs._cli.apps` loads it and states the rules. The same commands exist as ``flask
bgjobs ...`` (:mod:`bgjobs._cli.flask_commands`, registered through Flask's
``flask.commands`` entry point, calls :func:`invoke`). Exit status: 0 success, 1 a job
failed (or ``run`` had to abandon a running job), 2 a usage error — bad APP, unknown job,
a schedule the target cannot express — reported as exactly one ``bgjobs: error: ...`` line
on stderr, never a traceback.

Each subcommand is one row of :data:`COMMANDS`: a function adding its arguments (APP
comes first, for all of them) and a handler taking the loaded APP and the parsed
arguments and returning the exit status. What ``run`` shows lives in
:mod:`bgjobs._cli.console`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from . import __version__, _time
from ._cli.apps import APP_HELP, LoadedApp, load_app
from ._cli.console import (
    View,
    display_path,
    iso,
    log_to_stderr,
    one_line,
    open_view,
    plural,
    span,
    summary,
    table,
)
from .check import FIRES_SHOWN, check_registry
from .config import DEFAULT_PREFIX, Settings
from .errors import AppLoadError, BGJobsError, InvalidScheduleError, UsageError
from .local import LocalJobManager
from .registry import JobDefinition
from .schedules import CronSchedule
from .types import SchedulingMode
from .vercel import VERCEL_PLANS, vercel_crons

__all__ = [
    "COMMANDS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "build_parser",
    "invoke",
    "main",
]

UTC = timezone.utc

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_STEP = 0.1  # how often ``run`` checks for signals and finished runs


# --- run --------------------------------------------------------------------------------


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


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _run_arguments(parser: argparse.ArgumentParser) -> None:
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


def _cmd_run(target: LoadedApp, args: argparse.Namespace) -> int:
    duration: Optional[float] = args.duration
    registry = target.registry
    app = display_path(target.spec)
    if not len(registry):
        raise UsageError(f"{app!r} declares no jobs; there is nothing to run")
    try:
        # Always local, with the settings a Flask app's BGJobs would use: BGJOBS_LOCK_DIR
        # (so only one process per host runs each job), BGJOBS_SHUTDOWN_TIMEOUT, _TIMEZONE.
        manager = LocalJobManager(settings=_local_settings(target))
    except (ValueError, BGJobsError) as exc:
        raise UsageError(str(exc)) from None
    manager.set_run_context(target.run_context)
    out = sys.stdout
    stop = _StopSignals()
    started = _time.monotonic()
    with contextlib.ExitStack() as stack:
        view = open_view(stack, out, plain=args.plain)
        stack.enter_context(stop.installed())
        try:
            registry.apply(manager)
        except BaseException:
            manager.stop_all_jobs()
            raise
        statuses = manager.get_all_job_statuses()
        width = max(len(s.id) for s in statuses)
        until = f" for {span(duration)}" if duration else ""
        view.intro(
            [
                f"bgjobs: running {plural(len(registry), 'job')} from {app}{until} "
                "(Ctrl-C or SIGTERM stops)"
            ]
            + [f"  {s.id.ljust(width)}  {s.schedule}" for s in statuses]
        )

        deadline = started + duration if duration is not None else None
        limit = f" of {span(duration)}" if duration else ""
        while stop.count == 0:
            now = _time.monotonic()
            if deadline is not None and now >= deadline:
                break
            uptime = f"up {span(now - started)}{limit}"
            header = f"bgjobs run {app} · {plural(len(registry), 'job')} · {uptime} · Ctrl-C stops"
            view.refresh(manager, header)
            time.sleep(_STEP if deadline is None else min(_STEP, deadline - now))
        reason = "duration reached" if stop.count == 0 else f"{stop.last} received"
        abandoned, why = _shut_down(manager, view, stop, reason)
        view.refresh(manager, f"bgjobs run {app} · stopped ({reason})", force=True)
    print(summary(manager, reason, _time.monotonic() - started), file=out, flush=True)
    if not abandoned:
        return EXIT_OK
    print(
        f"bgjobs: gave up waiting for {', '.join(abandoned)} ({why})", file=sys.stderr, flush=True
    )
    # The exit hook leaves a manager that was shut down alone: the process ends now.
    return EXIT_FAILED


def _shut_down(
    manager: LocalJobManager, view: View, stop: _StopSignals, reason: str
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
    began = _time.monotonic()
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
        waited = span(_time.monotonic() - began)
        view.refresh(
            manager, f"stopping ({reason}) · waiting {waited} for {names} · Ctrl-C again quits"
        )


# --- list -------------------------------------------------------------------------------


def _schedule_and_fires(
    definition: JobDefinition, now: datetime, count: int, target: LoadedApp
) -> Tuple[str, List[datetime]]:
    """The schedule's description and its next ``count`` fire times after ``now``.

    An interval counts from when the scheduler starts, so its times assume it starts now.
    """
    schedule = definition.to_schedule(_settings(target).timezone)
    if not isinstance(schedule, CronSchedule):
        step = definition.interval or 0.0
        times = [now + timedelta(seconds=step * k) for k in range(1, count + 1)]
        return schedule.description, times
    times = []
    after = now
    for _ in range(count):
        after = schedule.next_fire(after)
        times.append(after)
    return schedule.description, times


def _cmd_list(target: LoadedApp, args: argparse.Namespace) -> int:
    registry = target.registry
    if not len(registry):
        print(f"{target.spec}: no jobs declared")
        return EXIT_OK
    now = _time.utc_now()
    rows = []
    for definition in registry:
        description, fires = _schedule_and_fires(definition, now, 3, target)
        fraction = definition.interval is not None and definition.interval % 1 != 0
        rows.append(
            (definition.id, description, "  ".join(iso(t, fraction=fraction) for t in fires))
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


# --- check ------------------------------------------------------------------------------


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=("local", "trigger-dev", "vercel"),
        help="check for this runtime (default: the one APP's settings select)",
    )


def _cmd_check(target: LoadedApp, args: argparse.Namespace) -> int:
    settings = _settings(target)
    try:
        mode: SchedulingMode = args.mode or settings.mode
    except ValueError as exc:  # a bad BGJOBS_MODE
        raise UsageError(str(exc)) from None
    checks = check_registry(target.registry, mode=mode, settings=settings)
    if not checks:
        print(f"{target.spec}: no jobs declared")
        return EXIT_OK
    good = [c for c in checks if c.problem is None]
    if good:
        rows = [
            (
                c.id,
                c.schedule if c.runs_as is None else f"{c.schedule}, runs as {c.runs_as!r}",
                "  ".join(_zoned_iso(t) for t in c.next_fires),
            )
            for c in good
        ]
        id_width = max(len("JOB"), *(len(r[0]) for r in rows))
        schedule_width = max(len("SCHEDULE"), *(len(r[1]) for r in rows))
        print(
            f"{'JOB'.ljust(id_width)}  {'SCHEDULE'.ljust(schedule_width)}  "
            f"NEXT {FIRES_SHOWN} FIRE TIMES (THE JOB'S TIMEZONE)"
        )
        for job_id, description, times in rows:
            print(f"{job_id.ljust(id_width)}  {description.ljust(schedule_width)}  {times}")
        if any(c.runs_as is None and c.schedule.startswith("every ") for c in good):
            print("(an interval counts from when the scheduler starts: these times assume now)")
    problems = [c.problem for c in checks if c.problem is not None]
    for problem in problems:
        print(f"bgjobs: problem: {problem}", file=sys.stderr, flush=True)
    jobs = f"{len(checks)} job{'s' if len(checks) != 1 else ''}"
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        print(f"{jobs} checked for the {mode} runtime: {count}", flush=True)
        return EXIT_FAILED
    print(f"{jobs} checked for the {mode} runtime: no problems", flush=True)
    return EXIT_OK


def _zoned_iso(when: datetime) -> str:
    """``2026-03-29T09:00:00+02:00`` in its own offset; ``Z`` for UTC."""
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


# --- exec -------------------------------------------------------------------------------


def _exec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help="the id of the job to run")


def _definition(target: LoadedApp, job_id: str) -> JobDefinition:
    """APP's job ``job_id``; an unknown id is a usage error listing APP's jobs."""
    definition = target.registry.get(job_id)
    if definition is None:
        known = ", ".join(d.id for d in target.registry) or "none"
        raise UsageError(f"no job {job_id!r} in {target.spec} (its jobs: {known})")
    return definition


def _host_manager(target: LoadedApp, definitions: Sequence[JobDefinition]) -> LocalJobManager:
    """The local runtime with APP's settings and ``definitions`` installed unscheduled.

    No timer, so a job runs only through dispatch() — the path the HTTP endpoint and
    Trigger.dev take: overlap lock (host-wide with a state directory, the lock a `bgjobs
    run` or a gunicorn worker takes), status, metrics, logging, inside the Flask app's
    context when APP is one — and with a state directory it reads and changes the state
    every process of the host shares (statuses, run history, pause flags).
    """
    try:
        manager = LocalJobManager(settings=_local_settings(target))
    except (ValueError, BGJobsError) as exc:
        raise UsageError(str(exc)) from None
    manager.set_run_context(target.run_context)
    for definition in definitions:
        manager.add_job(definition, scheduled=False)
    return manager


def _cmd_exec(target: LoadedApp, args: argparse.Namespace) -> int:
    job_id: str = args.job_id
    manager = _host_manager(target, [_definition(target, job_id)])
    with log_to_stderr():
        result = manager.dispatch(job_id, trigger="cli")
    outcome, status = result.outcome, result.status
    assert status is not None  # installed just above
    if outcome != "ran":
        print(f"{job_id}: not run ({outcome})")
        return EXIT_FAILED
    if status.status == "failed":
        print(f"{job_id}: failed after {status.duration:.3f}s: {status.error}")
        return EXIT_FAILED
    print(f"{job_id}: {status.status} in {status.duration:.3f}s")
    return EXIT_OK


# --- status, runs, pause, resume: the host's state -----------------------------------


def _runs_limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 3 or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100, got {text!r}")
    return int(text)


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _json_argument(parser)


def _when(value: Optional[datetime]) -> str:
    return iso(value) if value is not None else "-"


def _clip(text: Optional[str], width: int = 60) -> str:
    if not text:
        return "-"
    line = one_line(text)
    return line if len(line) <= width else line[: width - 1] + "…"


def _cmd_status(target: LoadedApp, args: argparse.Namespace) -> int:
    with _host_manager(target, list(target.registry)) as manager:
        statuses = manager.get_all_job_statuses()
    if args.json:
        print(json.dumps({"jobs": [s.to_dict() for s in statuses]}, indent=2))
        return EXIT_OK
    if not statuses:
        print(f"{target.spec}: no jobs declared")
        return EXIT_OK
    headers = ["JOB", "STATUS", "RUNS", "FAILS", "SKIPS", "LAST RUN", "LAST SUCCESS"]
    headers += ["NEXT RUN", "PID", "LAST ERROR"]
    rows = [
        (
            s.id,
            s.status,
            str(s.runs),
            str(s.failures),
            str(s.skips),
            _when(s.last_run),
            _when(s.last_success),
            _when(s.next_run),
            str(s.running_pid) if s.running_pid is not None else "-",
            _clip(s.last_error or s.error),
        )
        for s in statuses
    ]
    for line in table(headers, rows, right=(2, 3, 4, 8)):
        print(line)
    print("(times in UTC)")
    return EXIT_OK


def _runs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help="the id of the job")
    parser.add_argument(
        "--limit",
        type=_runs_limit,
        default=20,
        metavar="N",
        help="show the newest N runs, 1 to 100 (default: 20)",
    )
    _json_argument(parser)


def _cmd_runs(target: LoadedApp, args: argparse.Namespace) -> int:
    job_id: str = args.job_id
    with _host_manager(target, [_definition(target, job_id)]) as manager:
        runs = manager.get_job_runs(job_id, args.limit)
    if args.json:
        print(json.dumps({"job_id": job_id, "runs": [r.to_dict() for r in runs]}, indent=2))
        return EXIT_OK
    if not runs:
        print(f"{job_id}: no runs recorded")
        return EXIT_OK
    rows = [
        (
            iso(r.started),
            r.trigger,
            r.outcome if r.attempt == 1 else f"{r.outcome} (attempt {r.attempt})",
            f"{r.duration:.3f}s" if r.duration is not None else "-",
            _clip(r.error),
        )
        for r in runs
    ]
    for line in table(
        ("STARTED (UTC)", "TRIGGER", "OUTCOME", "DURATION", "ERROR"), rows, right=(3,)
    ):
        print(line)
    return EXIT_OK


def _job_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help="the id of the job")


def _cmd_pause(target: LoadedApp, args: argparse.Namespace) -> int:
    return _set_paused(target, args.job_id, True)


def _cmd_resume(target: LoadedApp, args: argparse.Namespace) -> int:
    return _set_paused(target, args.job_id, False)


def _set_paused(target: LoadedApp, job_id: str, paused: bool) -> int:
    with _host_manager(target, [_definition(target, job_id)]) as manager:
        (manager.pause_job if paused else manager.resume_job)(job_id)
    print(f"{job_id}: paused (no runs until 'bgjobs resume')" if paused else f"{job_id}: resumed")
    return EXIT_OK


# --- sync and vercel-json ---------------------------------------------------------------


def _sync_arguments(parser: argparse.ArgumentParser) -> None:
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


def _cmd_sync(target: LoadedApp, args: argparse.Namespace) -> int:
    # Imported here: the trigger-dev runtime needs requests, which other commands never load.
    from .errors import TriggerDevError
    from .triggerdev import sync_registry

    try:
        report = sync_registry(
            target.registry, settings=_settings(target), prune=args.prune, timeout=args.timeout
        )
    except ValueError as exc:  # not configured (no key, bad URL) or a bad schedule
        raise UsageError(str(exc)) from None
    except (TriggerDevError, TimeoutError) as exc:
        _print_error(str(exc))
        return EXIT_FAILED
    for line in report.lines():
        print(line)
    print(
        f"{len(report.created)} created, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged, {len(report.removed)} removed"
    )
    return EXIT_OK


def _vercel_json_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefix",
        help=f"URL prefix of the dispatch endpoints (default: {DEFAULT_PREFIX}, or a Flask "
        "app's BGJOBS_URL_PREFIX)",
    )
    parser.add_argument(
        "--plan",
        choices=VERCEL_PLANS,
        help="refuse what this Vercel plan cannot run (hobby: at most once a day per job)",
    )


def _cmd_vercel_json(target: LoadedApp, args: argparse.Namespace) -> int:
    prefix: Optional[str] = args.prefix
    settings = _settings(target)
    # InvalidScheduleError: one line, exit 2.
    crons = vercel_crons(
        target.registry,
        settings.url_prefix if prefix is None else prefix,
        settings=settings,
        plan=args.plan,
    )
    print(json.dumps({"crons": crons}, indent=2))
    return EXIT_OK


# --- the command table ---------------------------------------------------------------


Handler = Callable[[LoadedApp, argparse.Namespace], int]
"""Runs a subcommand on the loaded APP with its parsed arguments; returns the exit status."""


@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure`` adds its arguments (after APP), ``handler`` runs it.

    A handler reports user mistakes by raising :class:`~bgjobs.errors.UsageError` or
    :class:`~bgjobs.errors.InvalidScheduleError` (and loading APP by raising
    :class:`~bgjobs.errors.AppLoadError`); they are printed as one line, exit status 2.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Handler
    description: str = ""

    def describe(self) -> str:
        """The text under ``--help``'s usage line."""
        text = self.description or self.help[:1].upper() + self.help[1:] + "."
        return textwrap.fill(text, 80)  # the raw formatter that keeps APP_HELP would not wrap


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


COMMANDS: Tuple[Command, ...] = (
    Command(
        "run",
        "schedule APP's jobs in this process and show runs as they happen",
        _run_arguments,
        _cmd_run,
        "Schedule APP's jobs on a LocalJobManager (for a Flask app: with its settings, "
        "each run inside its app context) and run them in the foreground. "
        "Ctrl-C or SIGTERM stops scheduling, waits for running jobs (at most "
        "BGJOBS_SHUTDOWN_TIMEOUT seconds, default 10) and prints the metrics; a second "
        "signal stops waiting. On a terminal the jobs are shown in a live table, "
        "otherwise as one line per finished run.",
    ),
    Command(
        "list",
        "show each job, its schedule and its next three fire times",
        _no_arguments,
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
        "bgjobs:<scope>:<job id>, the scope being the key's environment, made per developer "
        "for development keys and per branch for previews), leaving unchanged ones untouched, "
        "and "
        "print what it created, updated, left and removed. Needs TRIGGER_DEV_API_KEY. "
        "Exit 0 on success, 1 if Trigger.dev refused or failed, 2 for a usage error.",
    ),
    Command(
        "vercel-json",
        'print the "crons" entries for vercel.json',
        _vercel_json_arguments,
        _cmd_vercel_json,
        'Print {"crons": [...]} for vercel.json: one entry per job, calling its '
        "dispatch endpoint PREFIX/<job id> on the job's schedule. With --plan, refuse "
        "what that plan cannot run (Hobby: a job more often than once a day).",
    ),
    Command(
        "status",
        "show every job's state on this host: runs, failures, last error, running pid",
        _status_arguments,
        _cmd_status,
        "Print one row per job of APP with the state every process of this host shares "
        "(the state directory's store): status, runs, failures, skips, last run, last "
        "success, next run, the pid running it now, and the last error. --json prints "
        '{"jobs": [...]}, each job as the HTTP status endpoint shows it.',
    ),
    Command(
        "runs",
        "show a job's recent runs, newest first",
        _runs_arguments,
        _cmd_runs,
        "Print the newest runs of one job recorded on this host (started, trigger, "
        'outcome, duration, error). --json prints {"job_id": ..., "runs": [...]}.',
    ),
    Command(
        "pause",
        "pause a job on this host until it is resumed",
        _job_argument,
        _cmd_pause,
        "Pause one job for every process of this host sharing the state directory: its "
        "schedule keeps its place but nothing runs it until 'bgjobs resume'.",
    ),
    Command(
        "resume",
        "resume a paused job on this host",
        _job_argument,
        _cmd_resume,
    ),
    Command(
        "check",
        "validate every schedule and show each job's next five fire times",
        _check_arguments,
        _cmd_check,
        "Load APP's registry and check every job for the runtime APP's settings select "
        "(or --mode): its schedule is valid and, for trigger-dev and vercel, converts to "
        "the cron that runtime runs. Print each job's next five fire times in its "
        "timezone. Exit 0 without problems, 1 with one 'bgjobs: problem:' line on stderr "
        "per problem, 2 for a usage error.",
    ),
)
"""Every subcommand, in the order ``--help`` lists them."""


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    """The argument parser for ``commands``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="bgjobs",
        description="Run, inspect and dispatch the recurring jobs of an app's JobRegistry.",
        epilog=APP_HELP,
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
            description=command.describe(),
            epilog=APP_HELP,
            formatter_class=formatter,
        )
        sub.add_argument(
            "app", metavar="APP", help="a module or .py file, optionally :attribute or :factory()"
        )
        command.configure(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse printed
        return _exit_status(exc)
    return _load_and_run(args.handler, lambda: load_app(args.app), args)


def invoke(
    command: Command, argv: Sequence[str], load: Callable[[], LoadedApp], *, prog: str
) -> int:
    """Run ``command`` with ``argv`` (its own arguments, no APP) on the APP ``load`` returns.

    The way in for a host with an APP of its own: ``flask bgjobs exec JOB_ID`` is
    ``invoke(exec, ["JOB_ID"], <the Flask app>, prog="flask bgjobs exec")``. Same
    arguments, messages and exit statuses as :func:`main`.
    """
    parser = argparse.ArgumentParser(prog=prog, description=command.describe())
    command.configure(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return _exit_status(exc)
    return _load_and_run(command.handler, load, args)


def _exit_status(exc: SystemExit) -> int:
    if isinstance(exc.code, int):
        return exc.code
    return EXIT_OK if exc.code is None else EXIT_USAGE


def _load_and_run(handler: Handler, load: Callable[[], LoadedApp], args: argparse.Namespace) -> int:
    try:
        target = load()
        _leave_jobs_to_the_command(target)
        return handler(target, args)
    except (AppLoadError, UsageError, InvalidScheduleError) as exc:
        _print_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C outside `run`, which handles it itself
        print("bgjobs: interrupted", file=sys.stderr, flush=True)
        return 130


def _leave_jobs_to_the_command(target: LoadedApp) -> None:
    """In a command's process only the command runs jobs.

    Creating APP's Flask app may have scheduled its jobs on the extension's own manager
    (``BGJOBS_AUTOSTART``): a ``run`` would then run each twice, an ``exec`` could start
    others. Stop them here, in this process only; other processes keep their schedules
    (with a lock directory, one takes over any this process led).
    """
    if target.manager is not None:
        target.manager.stop_all_jobs()


def _settings(target: LoadedApp) -> Settings:
    """APP's settings (a Flask app's, else the environment's); a bad value is a usage error."""
    if target.settings is not None:
        return target.settings
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _local_settings(target: LoadedApp) -> Settings:
    """APP's settings for a local manager: its state directory, else the default one for
    the file declaring its registry — the one the app's own processes use."""
    return _settings(target).with_default_state_dir(target.registry.source_file)


def _print_error(message: str) -> None:
    print(f"bgjobs: error: {one_line(message)}", file=sys.stderr, flush=True)
