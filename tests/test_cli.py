"""The ``bgjobs`` command line, mostly in real subprocesses (``python -m bgjobs``)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Set

import pytest
from support_cli import (
    EXAMPLES,
    REPO,
    cli_command,
    cli_env,
    run_cli,
    start_cli,
    wait_for,
    write_app,
)

from bgjobs import JobRegistry
from bgjobs._cli.apps import load_app, load_registry
from bgjobs.cli import COMMANDS, build_parser, main
from bgjobs.errors import AppLoadError

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and ptys")

BASIC_APP = """
    import asyncio
    from bgjobs import JobRegistry

    jobs = JobRegistry()

    @jobs.interval("tick", "Tick", seconds=0.2)
    def tick():
        pass

    @jobs.interval("boom", "Boom", seconds=0.3)
    def boom():
        raise ValueError("kaboom")

    @jobs.cron("nightly", "Nightly", "0 3 * * *")
    def nightly():
        pass

    @jobs.interval("async-tick", "Async tick", minutes=1)
    async def async_tick():
        await asyncio.sleep(0)
"""

# A job that leaves a trace of its start and its end in MARKER_FILE.
SLOW_APP = """
    import os, time
    from bgjobs import JobRegistry

    jobs = JobRegistry()
    MARKER = os.environ["MARKER_FILE"]
    SECONDS = float(os.environ.get("SLOW_SECONDS", "1"))

    @jobs.interval("slow", "Slow", seconds=0.2)
    def slow():
        with open(MARKER, "a") as f:
            f.write("start\\n")
        time.sleep(SECONDS)
        with open(MARKER, "a") as f:
            f.write(f"end {time.time()}\\n")
"""

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("bgjobs: error: "), lines[0]
    return lines[0]


# --- run ------------------------------------------------------------------------------


def test_run_prints_each_run_and_the_metrics_and_stops_after_duration(tmp_path: Path) -> None:
    write_app(tmp_path, BASIC_APP)
    started = time.monotonic()
    result = run_cli("run", "app.py", "--duration", "1.2", cwd=tmp_path)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert elapsed >= 1.2
    out = result.stdout
    assert "bgjobs: running 4 jobs from app.py for 1.2s" in out
    assert re.search(
        r"Z tick: completed in \d\.\d{3}s \(run \d+(, \d+ since the last line)?, next ", out
    )
    assert "boom: FAILED after" in out and "ValueError: kaboom" in out
    assert "bgjobs: stopped after 1.2s (duration reached)" in out
    metrics = re.search(r"Metrics: (\d+) runs \((\d+) succeeded, (\d+) failed\)", out)
    assert metrics, out
    total, succeeded, failed = map(int, metrics.groups())
    assert total == succeeded + failed and succeeded >= 3 and failed >= 2  # ticks, booms
    # The library's own log goes to stderr: the failure with its traceback.
    assert "ERROR bgjobs.execution: job 'boom' (Boom) failed" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_scheduling_and_waits_for_the_running_job(
    tmp_path: Path, signum: signal.Signals
) -> None:
    write_app(tmp_path, SLOW_APP)
    marker = tmp_path / "marker.txt"
    env = cli_env(MARKER_FILE=str(marker), SLOW_SECONDS="0.5")
    proc, out, err = start_cli("run", "app.py", cwd=tmp_path, env=env)
    try:
        assert wait_for(lambda: marker.exists() and "start" in marker.read_text()), err.text
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0, err.join()
        exited_at = time.time()
    finally:
        proc.kill()
    stdout = out.join()

    lines = marker.read_text().splitlines()
    assert lines[0] == "start" and lines[1].startswith("end "), lines
    assert len(lines) == 2, "no run may start after the signal"
    assert float(lines[1].split()[1]) <= exited_at  # the process outlived the run
    assert f"({signum.name} received)" in stdout
    assert "Metrics: 1 run (1 succeeded, 0 failed), " in stdout


@posix_only
def test_second_signal_while_waiting_gives_up_at_once(tmp_path: Path) -> None:
    write_app(tmp_path, SLOW_APP)
    marker = tmp_path / "marker.txt"
    env = cli_env(MARKER_FILE=str(marker), SLOW_SECONDS="30", BGJOBS_SHUTDOWN_TIMEOUT="60")
    proc, out, err = start_cli("run", "app.py", cwd=tmp_path, env=env)
    try:
        assert wait_for(lambda: marker.exists() and "start" in marker.read_text()), err.text
        proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: "waiting for slow to finish" in out.text), out.text
        second = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 1
        assert time.monotonic() - second < 20  # not the 60 s shutdown timeout
    finally:
        proc.kill()
    assert "Metrics: 0 runs" in out.join()
    assert "bgjobs: gave up waiting for slow (second signal: SIGTERM)" in err.join()


def test_shutdown_timeout_bounds_the_wait(tmp_path: Path) -> None:
    write_app(tmp_path, SLOW_APP)
    env = cli_env(
        MARKER_FILE=str(tmp_path / "marker.txt"),
        SLOW_SECONDS="30",
        BGJOBS_SHUTDOWN_TIMEOUT="0.5",
    )
    started = time.monotonic()
    result = run_cli("run", "app.py", "--duration", "0.6", cwd=tmp_path, env=env)

    assert time.monotonic() - started < 20  # the job would take 30 s
    assert result.returncode == 1
    assert "waiting for slow to finish" in result.stdout
    assert "Metrics: 0 runs" in result.stdout
    assert "bgjobs: gave up waiting for slow (shutdown timeout passed)" in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_run_on_a_terminal_redraws_a_live_table(tmp_path: Path) -> None:
    import pty

    write_app(
        tmp_path,
        """
        from bgjobs import JobRegistry

        jobs = JobRegistry()

        @jobs.interval("chatty", "Chatty", seconds=0.2)
        def chatty():
            print("hello from chatty")

        @jobs.interval("boom", "Boom", seconds=0.3)
        def boom():
            raise ValueError("kaboom")
        """,
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cli_command("run", "app.py", "--duration", "0.8"),
        cwd=tmp_path,
        env=cli_env(TERM="xterm", COLUMNS="120"),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    chunks: List[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        os.close(master)
    screen = b"".join(chunks).decode()

    assert "\x1b[?25l" in screen and screen.rstrip().count("\x1b[?25h") == 1  # cursor restored
    assert re.search(r"\x1b\[\d+A\r\x1b\[J", screen)  # redrawn in place
    assert re.search(r"JOB\s+SCHEDULE\s+STATUS\s+LAST RUN\s+TOOK\s+NEXT RUN\s+RUNS", screen)
    assert "hello from chatty" in screen  # a job's print() lands above the table
    assert "ERROR: job 'boom' (Boom) failed" in screen and "[app.py:" in screen
    assert "Traceback" not in screen  # the live view keeps one line per event
    assert "Metrics: " in screen.split("\x1b[?25h")[-1]


def test_quickstart_example_runs_and_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "2.2"],
        cwd=REPO,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bgjobs: running 4 jobs from examples/quickstart.py for 2.2s" in out
    summary = out[out.index("bgjobs: stopped after") :]
    for job_id in ("heartbeat", "every-5s", "flaky", "slow"):
        assert re.search(rf"^  {job_id} ", summary, re.M), summary
    # slow (due at 1 s, takes 3 s) is normally still running at 2.2 s: the stop waits for it.
    assert re.search(r": completed in \d", out)
    assert "Metrics: " in summary


# --- list -----------------------------------------------------------------------------


def test_list_shows_three_fire_times_per_job(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    write_app(
        tmp_path,
        """
        from bgjobs import JobRegistry

        jobs = JobRegistry()
        jobs.add_interval("every-90s", "Every 90 s", lambda: None, 90)
        paris = "Europe/Paris"
        jobs.add_cron("paris-9am", "9 am in Paris", lambda: None, "0 9 * * *", timezone=paris)
        jobs.add_cron("every-20s", "Every 20 s", lambda: None, "*/20 * * * * *")
        jobs.add_cron("hourly", "Hourly", lambda: None, "@hourly")
        """,
    )
    before = datetime.now(timezone.utc).replace(microsecond=0)
    result = run_cli("list", "app.py", cwd=tmp_path)
    after = datetime.now(timezone.utc)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["JOB", "SCHEDULE", "NEXT", "FIRE", "TIMES", "(UTC)"]
    times: Dict[str, List[datetime]] = {}
    for job_id in ("every-90s", "paris-9am", "every-20s", "hourly"):
        (line,) = [line for line in lines if line.startswith(job_id + " ")]
        times[job_id] = [_parse_iso(t) for t in ISO_UTC.findall(line)]
        assert len(times[job_id]) == 3, line
        assert times[job_id] == sorted(set(times[job_id]))
        assert before <= times[job_id][0]

    assert "every 1m30s" in result.stdout and "cron 0 9 * * * (Europe/Paris)" in result.stdout
    first, second, third = times["every-90s"]
    assert before + timedelta(seconds=90) <= first <= after + timedelta(seconds=90)
    assert third - second == second - first == timedelta(seconds=90)
    for fire in times["paris-9am"]:
        local = fire.astimezone(ZoneInfo("Europe/Paris"))
        assert (local.hour, local.minute, local.second) == (9, 0, 0)
    assert {t.second % 20 for t in times["every-20s"]} == {0}
    assert [b - a for a, b in zip(times["every-20s"], times["every-20s"][1:])] == [
        timedelta(seconds=20)
    ] * 2
    assert all((t.minute, t.second) == (0, 0) for t in times["hourly"])
    assert "these times assume it starts now" in result.stdout


# --- exec -----------------------------------------------------------------------------


def test_exec_runs_one_job_and_exits_0_on_success(tmp_path: Path) -> None:
    write_app(tmp_path, BASIC_APP)
    result = run_cli("exec", "app.py", "tick", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"tick: completed in \d+\.\d{3}s\n", result.stdout)

    result = run_cli("exec", "app.py:jobs", "async-tick", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("async-tick: completed in ")


def test_exec_exits_1_and_logs_the_traceback_when_the_job_fails(tmp_path: Path) -> None:
    write_app(tmp_path, BASIC_APP)
    result = run_cli("exec", "app.py", "boom", cwd=tmp_path)
    assert result.returncode == 1
    assert re.fullmatch(r"boom: failed after \d+\.\d{3}s: ValueError: kaboom\n", result.stdout)
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise ValueError("kaboom")' in result.stderr


def test_exec_does_not_run_a_job_running_in_another_process_of_the_host(tmp_path: Path) -> None:
    from bgjobs._local.hostlock import LockDirectory, lock_file_name

    write_app(tmp_path, BASIC_APP)
    lock_dir = tmp_path / "locks"
    env = cli_env(BGJOBS_LOCK_DIR=str(lock_dir))
    # This process holds the job's host-wide run lock, as a LocalJobManager running it does.
    claim = LockDirectory(str(lock_dir)).lock(lock_file_name("job", "tick"))
    assert claim.try_acquire()
    try:
        busy = run_cli("exec", "app.py", "tick", cwd=tmp_path, env=env)
    finally:
        claim.release()
    assert busy.returncode == 1
    assert busy.stdout == "tick: not run (busy)\n"
    free = run_cli("exec", "app.py", "tick", cwd=tmp_path, env=env)
    assert free.returncode == 0, free.stderr


def test_exec_exits_2_for_an_unknown_job(tmp_path: Path) -> None:
    write_app(tmp_path, BASIC_APP)
    result = run_cli("exec", "app.py", "nope", cwd=tmp_path)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "no job 'nope' in app.py (its jobs: tick, boom, nightly, async-tick)" in line
    assert result.stdout == ""


# --- vercel-json ------------------------------------------------------------------------

VERCEL_APP = """
    from bgjobs import JobRegistry

    jobs = JobRegistry()
    jobs.add_interval("repository-sync", "Repository Synchronization", lambda: None, 300)
    jobs.add_cron("renewal-reminder", "Reminders", lambda: None, "0 9 * * *")
    jobs.add_cron("cleanup", "Cleanup", lambda: None, "@daily")
    jobs.add_cron("half-hourly", "Half hourly", lambda: None, "0 */30 * * * *")
"""


def test_vercel_json_prints_the_crons_for_vercel_json(tmp_path: Path) -> None:
    write_app(tmp_path, VERCEL_APP)
    result = run_cli("vercel-json", "app.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "crons": [
            {"path": "/api/cron/repository-sync", "schedule": "*/5 * * * *"},
            {"path": "/api/cron/renewal-reminder", "schedule": "0 9 * * *"},
            {"path": "/api/cron/cleanup", "schedule": "0 0 * * *"},
            {"path": "/api/cron/half-hourly", "schedule": "*/30 * * * *"},
        ]
    }

    result = run_cli("vercel-json", "app.py", "--prefix", "/internal/jobs/", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    paths = [c["path"] for c in json.loads(result.stdout)["crons"]]
    assert paths[0] == "/internal/jobs/repository-sync"


def test_vercel_json_exits_2_when_a_schedule_cannot_be_expressed(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        VERCEL_APP + '    jobs.add_interval("seven", "Every 7 minutes", lambda: None, 420)\n',
    )
    result = run_cli("vercel-json", "app.py", cwd=tmp_path)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "job 'seven'" in line and "7m cannot be expressed" in line
    assert result.stdout == ""


def test_vercel_json_plan_hobby_refuses_a_job_more_often_than_daily(tmp_path: Path) -> None:
    write_app(tmp_path, VERCEL_APP)
    result = run_cli("vercel-json", "app.py", "--plan", "hobby", cwd=tmp_path)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "job 'repository-sync'" in line and "Hobby plan" in line
    assert "'*/5 * * * *' fires 288 times a day" in line
    assert result.stdout == ""

    for plan in ("pro", "enterprise"):
        result = run_cli("vercel-json", "app.py", "--plan", plan, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["crons"]) == 4


def test_vercel_json_plan_hobby_prints_daily_and_rarer_jobs(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """
        from bgjobs import JobRegistry

        jobs = JobRegistry()
        jobs.add_cron("renewal-reminder", "Reminders", lambda: None, "0 9 * * *")
        jobs.add_cron("weekdays", "Weekdays", lambda: None, "30 6 * * 1-5")
        jobs.add_interval("weekly", "Weekly", lambda: None, 7 * 24 * 3600)
        """,
    )
    result = run_cli("vercel-json", "app.py", "--plan", "hobby", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_cli("vercel-json", "app.py", cwd=tmp_path).stdout


def test_vercel_json_refuses_an_unknown_plan(tmp_path: Path) -> None:
    write_app(tmp_path, VERCEL_APP)
    result = run_cli("vercel-json", "app.py", "--plan", "free", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'free'" in result.stderr


# --- bad APP and usage errors ---------------------------------------------------------

BAD_APPS = {
    "missing-file": ("list", "missing.py", None, "no such file: 'missing.py'"),
    "no-registry": ("run", "noreg.py", "x = 1\n", "no JobRegistry in 'noreg.py'"),
    "two-registries": (
        "exec",
        "two.py",
        "from bgjobs import JobRegistry\nfirst = JobRegistry()\nsecond = JobRegistry()\n",
        "'two.py' has 2 JobRegistry objects (first, second); choose one with two.py:first",
    ),
    "syntax-error": (
        "list",
        "broken.py",
        "from bgjobs import JobRegistry\njobs = JobRegistry(\n",
        "importing 'broken.py' failed: SyntaxError:",
    ),
    "raises-on-import": (
        "vercel-json",
        "raises.py",
        "import json\n\nraise RuntimeError('no config\\nat all')\n",
        "importing 'raises.py' failed: RuntimeError: no config at all (raises.py:3)",
    ),
    "missing-dependency": (
        "list",
        "needs.py",
        "import no_such_dependency_for_bgjobs_tests\n",
        "ModuleNotFoundError: No module named 'no_such_dependency_for_bgjobs_tests'",
    ),
    "bad-schedule-at-import": (
        "list",
        "badsched.py",
        "from bgjobs import JobRegistry\njobs = JobRegistry()\n"
        "jobs.add_interval('x', 'X', print, -1)\n",
        "InvalidScheduleError: job 'x': interval must be a positive",
    ),
    "attribute-not-a-registry": (
        "list",
        "attr.py:helper",
        "def helper():\n    pass\n",
        "attr.py:helper is a function, not a JobRegistry",
    ),
    "missing-attribute": ("list", "attr.py:nothere", "x = 1\n", "'attr.py' has no attribute"),
    "unknown-module": ("list", "no_such_module_xyz.jobs", None, "no module named"),
    "neither-file-nor-module": ("list", "not a module!", None, "is neither a .py file"),
}


@pytest.mark.parametrize("case", list(BAD_APPS), ids=list(BAD_APPS))
def test_bad_app_is_one_error_line_and_exit_2(tmp_path: Path, case: str) -> None:
    command, app, source, expected = BAD_APPS[case]
    if source is not None:
        write_app(tmp_path, source, name=app.split(":")[0])
    args = [command, app] + (["some-job"] if command == "exec" else [])
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert expected in _one_error_line(result.stderr)
    assert result.stdout == ""


def test_bad_shutdown_timeout_is_a_usage_error(tmp_path: Path) -> None:
    write_app(tmp_path, BASIC_APP)
    result = run_cli("run", "app.py", cwd=tmp_path, env=cli_env(BGJOBS_SHUTDOWN_TIMEOUT="soon"))
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "BGJOBS_SHUTDOWN_TIMEOUT" in line and "'soon'" in line


def test_help_lists_every_command_and_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: bgjobs [-h] [-V] COMMAND ...")
    for name in ("run", "list", "exec", "vercel-json"):
        assert re.search(rf"^    {name} ", result.stdout, re.M)

    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "the following arguments are required: COMMAND" in result.stderr


# --- in-process: APP loading and the command table ------------------------------------


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what load_registry does to sys.path and sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before: Set[str] = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.mark.usefixtures("isolated_imports")
def test_load_registry_by_module_and_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_app(
        tmp_path,
        """
        from bgjobs import JobRegistry

        class Holder:
            registry = JobRegistry()

        jobs = JobRegistry()
        other = JobRegistry()
        """,
        name="cli_mod_attr.py",
    )
    monkeypatch.chdir(tmp_path)  # modules are looked up from the current directory
    module_jobs = load_registry("cli_mod_attr")
    assert module_jobs is sys.modules["cli_mod_attr"].jobs  # "jobs" wins over "other"
    assert load_registry("cli_mod_attr:other") is sys.modules["cli_mod_attr"].other
    assert (
        load_registry("cli_mod_attr:Holder.registry") is sys.modules["cli_mod_attr"].Holder.registry
    )


@pytest.mark.usefixtures("isolated_imports")
def test_load_registry_from_a_file_imports_its_siblings_and_caches_it(tmp_path: Path) -> None:
    write_app(tmp_path, "INTERVAL = 42\n", name="cli_sibling_settings.py")
    path = write_app(
        tmp_path,
        """
        from bgjobs import JobRegistry
        from cli_sibling_settings import INTERVAL

        registry = JobRegistry()
        alias = registry
        registry.add_interval("sibling", "Sibling", print, INTERVAL)
        """,
    )
    registry = load_registry(str(path))  # one registry under two names counts once
    assert isinstance(registry, JobRegistry)
    assert [d.interval for d in registry] == [42]
    assert load_registry(str(path)) is registry


@pytest.mark.usefixtures("isolated_imports")
def test_load_registry_imports_a_file_inside_a_package_as_part_of_it(tmp_path: Path) -> None:
    package = tmp_path / "cli_test_pkg"
    write_app(package, "", name="__init__.py")
    write_app(package, "EVERY = 5\n", name="settings.py")
    write_app(
        package,
        """
        from bgjobs import JobRegistry
        from .settings import EVERY

        jobs = JobRegistry()
        jobs.add_interval("relative", "Relative import", print, EVERY)
        """,
        name="tasks.py",
    )
    registry = load_registry(str(package / "tasks.py"))
    assert [d.id for d in registry] == ["relative"]
    assert registry is sys.modules["cli_test_pkg.tasks"].jobs


def test_load_registry_raises_app_load_error_with_one_line() -> None:
    with pytest.raises(AppLoadError, match="no such file") as info:
        load_registry("definitely/not/here.py")
    assert "\n" not in str(info.value)


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bgjobs ")
    assert main(["run"]) == 2  # APP missing: argparse's usage error
    assert main(["list", "definitely/not/here.py"]) == 2
    assert capsys.readouterr().err.endswith(
        "bgjobs: error: no such file: 'definitely/not/here.py'\n"
    )


def test_commands_table_drives_the_parser() -> None:
    names = ["run", "list", "exec", "sync", "vercel-json", "status", "runs", "pause", "resume"]
    names.append("check")
    assert [c.name for c in COMMANDS] == names
    parser = build_parser()
    args = parser.parse_args(["exec", "app.py", "job-id"])
    assert (args.app, args.job_id, args.handler) == ("app.py", "job-id", COMMANDS[2].handler)


# --- Flask apps as APP ------------------------------------------------------------------

# A Flask app built by a factory, its jobs declared in the same module. Each job writes
# what it saw of the app context to MARKER_FILE; there is no lock directory, so the
# extension's own timers (it autostarts) would run the jobs too if the CLI let them.
FLASK_FACTORY_APP = """
    import os
    from flask import Flask, current_app, g
    from bgjobs import JobRegistry
    from bgjobs.flask import BGJobs

    jobs = JobRegistry()

    @jobs.interval("probe", "Probe", seconds=0.2)
    def probe():
        g.touched = "yes"
        with open(current_app.config["MARKER_FILE"], "a") as f:
            f.write(f"{current_app.name}:{g.touched}\\n")

    def create_app():
        app = Flask("factory-app", instance_path=os.environ["INSTANCE_PATH"])
        app.config["MARKER_FILE"] = os.environ["MARKER_FILE"]
        app.config["BGJOBS_LOCK_DIR"] = None
        BGJobs(app, registry=jobs)
        return app
"""


def test_exec_and_run_of_a_flask_app_factory_run_in_its_app_context(tmp_path: Path) -> None:
    write_app(tmp_path, FLASK_FACTORY_APP)
    marker = tmp_path / "marker.txt"
    env = cli_env(MARKER_FILE=str(marker), INSTANCE_PATH=str(tmp_path / "instance"))

    for app in ("app.py:create_app", "app.py:create_app()", "app.py"):
        result = run_cli("exec", app, "probe", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("probe: completed in "), result.stdout
    assert marker.read_text().splitlines() == ["factory-app:yes"] * 3

    marker.unlink()
    result = run_cli("run", "app.py:create_app", "--duration", "1", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "bgjobs: running 1 job from app.py:create_app() for 1.0s" in result.stdout
    runs = int(re.findall(r"Metrics: (\d+) runs? ", result.stdout)[0])
    assert runs >= 3
    assert marker.read_text().splitlines() == ["factory-app:yes"] * runs  # none twice


def test_a_bare_registry_does_not_import_flask(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """
        import sys
        from bgjobs import JobRegistry

        jobs = JobRegistry()

        @jobs.interval("check", "Check", minutes=1)
        def check():
            assert "flask" not in sys.modules, "flask was imported"

        def create_app():  # not called: this module does not use Flask
            raise AssertionError("create_app was called")
        """,
    )
    result = run_cli("exec", "app.py", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def flask_module(
    tmp_path: Path, isolated_imports: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], str]]:
    """Writes a module using Flask and bgjobs (from the source given) in tmp_path; returns
    its path. The apps it creates have their instance folder in tmp_path and no timers."""
    pytest.importorskip("flask")
    monkeypatch.setenv("BGJOBS_MODE", "disabled")
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))
    header = """
        import os
        from flask import Flask
        from bgjobs import JobRegistry
        from bgjobs.flask import BGJobs

        def make(name):
            return Flask(name, instance_path=os.environ["INSTANCE_PATH"])

        jobs = JobRegistry()
        jobs.add_interval("sync", "Sync", print, 60)
    """
    count = iter(range(1000))

    def write(source: str) -> str:
        name = f"flask_mod_{next(count)}.py"
        text = textwrap.dedent(header) + textwrap.dedent(source)
        return str(write_app(tmp_path, text, name=name))

    yield write


def test_load_app_finds_a_flask_app_with_bgjobs_before_a_registry(
    flask_module: Callable[[str], str],
) -> None:
    path = flask_module(
        """
        plain = make("plain")           # no bgjobs: not a candidate
        web = make("web")
        BGJobs(web, registry=jobs)
        """
    )
    target = load_app(path)
    module = sys.modules[next(n for n in sys.modules if n.startswith("bgjobs_app_flask_mod"))]
    assert target.flask_app is module.web and target.registry is module.jobs
    assert target.spec.endswith(":web")
    assert target.run_context == module.web.app_context  # the extension's own mechanism
    assert target.settings is not None and target.settings.mode == "disabled"

    bare = load_app(f"{path}:jobs")  # naming the registry: no app, no context
    assert bare.registry is module.jobs and bare.flask_app is None and bare.run_context is None


def test_load_app_calls_an_app_factory(flask_module: Callable[[str], str]) -> None:
    path = flask_module(
        """
        def create_app(config=None):
            app = make("factory")
            BGJobs(app, registry=jobs)
            return app
        """
    )
    for spec in (f"{path}:create_app", f"{path}:create_app()", path):
        target = load_app(spec)
        assert target.flask_app is not None and target.flask_app.name == "factory"
        assert [d.id for d in target.registry] == ["sync"]
        assert target.spec == f"{path}:create_app()"


FLASK_MISTAKES = {
    "app-without-bgjobs": (
        "app = make('web')\n",
        ":app",
        "flask_mod_0.py:app is a Flask app without the bgjobs extension; set it up with "
        "bgjobs.flask.BGJobs(app, registry=jobs)",
    ),
    "module-with-a-plain-app-only": (
        "app = make('web')\ndel jobs\n",
        "",
        "no JobRegistry in",
    ),
    "bgjobs-without-a-registry": (
        "app = make('web')\nBGJobs(app)\n",
        "",
        "flask_mod_0.py:app has the bgjobs extension but no JobRegistry",
    ),
    "two-apps-with-bgjobs": (
        "one = make('one')\nBGJobs(one, registry=jobs)\ntwo = make('two')\nBGJobs(two)\n",
        "",
        "has 2 Flask apps with bgjobs (one, two); choose one with",
    ),
    "factory-needing-arguments": (
        "def create_app(config):\n    return make('x')\n",
        ":create_app",
        "flask_mod_0.py:create_app() needs arguments",
    ),
    "factory-called-with-arguments": ("", ":create_app('dev')", "without arguments"),
    "factory-raising": (
        "def create_app():\n    raise RuntimeError('no database')\n",
        "",
        "calling ",
    ),
    "factory-returning-nothing": (
        "def make_app():\n    pass\n",
        ":make_app()",
        "flask_mod_0.py:make_app() returned a NoneType, not a Flask app or a JobRegistry",
    ),
}


@pytest.mark.parametrize("case", list(FLASK_MISTAKES), ids=list(FLASK_MISTAKES))
def test_flask_app_mistakes_are_one_line_app_load_errors(
    flask_module: Callable[[str], str], case: str
) -> None:
    source, suffix, expected = FLASK_MISTAKES[case]
    path = flask_module(source)
    with pytest.raises(AppLoadError) as info:
        load_app(path + suffix)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    if case == "module-with-a-plain-app-only":
        assert "its Flask app 'app' does not have the bgjobs extension" in message
    if case == "factory-raising":
        assert "create_app() failed: RuntimeError: no database (" in message
