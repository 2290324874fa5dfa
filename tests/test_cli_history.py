"""``bgjobs status``, ``runs``, ``pause`` and ``resume``, in real subprocesses (and through
``flask bgjobs``). Each test gives the app its own state directory, so the commands see
what earlier commands of the same test did on this "host".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
from support_cli import cli_env, flask_cli_runner, run_cli, write_app

APP = """
    from bgjobs import JobRegistry

    jobs = JobRegistry()

    @jobs.interval("tick", "Tick", hours=1)
    def tick():
        pass

    @jobs.cron("boom", "Boom", "0 3 * * *")
    def boom():
        raise ValueError("kaboom " + "x" * 200)
"""


def env_for(tmp_path: Path) -> Dict[str, str]:
    return cli_env(BGJOBS_STATE_DIR=str(tmp_path / "state"))


def cli(tmp_path: Path, *args: str) -> Any:
    write_app(tmp_path, APP)
    return run_cli(*args, cwd=tmp_path, env=env_for(tmp_path))


def test_status_prints_one_row_per_job(tmp_path: Path) -> None:
    result = cli(tmp_path, "status", "app.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:5] == ["JOB", "STATUS", "RUNS", "FAILS", "SKIPS"]
    for column in ("LAST", "SUCCESS", "NEXT", "PID", "ERROR"):
        assert column in header
    assert [line.split()[0] for line in lines[1:3]] == ["tick", "boom"]
    assert result.stderr == ""


def test_status_json_has_every_job_as_the_http_status_shows_it(tmp_path: Path) -> None:
    result = cli(tmp_path, "status", "app.py", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [job["id"] for job in payload["jobs"]] == ["tick", "boom"]
    assert {"last_success", "last_error", "running_pid", "next_run"} <= set(payload["jobs"][0])


@pytest.mark.parametrize("command", ["runs", "pause", "resume"])
def test_unknown_job_is_a_usage_error(tmp_path: Path, command: str) -> None:
    result = cli(tmp_path, command, "app.py", "nope")
    assert result.returncode == 2
    assert result.stderr.startswith("bgjobs: error: no job 'nope'")
    assert "tick, boom" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("limit", ["0", "101", "x"])
def test_runs_limit_must_be_1_to_100(tmp_path: Path, limit: str) -> None:
    result = cli(tmp_path, "runs", "app.py", "tick", "--limit", limit)
    assert result.returncode == 2
    assert "--limit" in result.stderr and "1 to 100" in result.stderr


def test_help_lists_the_new_commands(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("status", "runs", "pause", "resume"):
        assert command in result.stdout


def test_runs_show_exec_runs_newest_first(tmp_path: Path) -> None:
    assert cli(tmp_path, "exec", "app.py", "tick").returncode == 0
    assert cli(tmp_path, "exec", "app.py", "boom").returncode == 1
    assert cli(tmp_path, "exec", "app.py", "boom").returncode == 1

    result = cli(tmp_path, "runs", "app.py", "boom", "--json", "--limit", "1")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["job_id"] == "boom" and len(payload["runs"]) == 1
    run = payload["runs"][0]
    assert run["trigger"] == "cli" and run["outcome"] == "failed"
    assert "kaboom" in run["error"]

    table = cli(tmp_path, "runs", "app.py", "boom")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["STARTED", "(UTC)", "TRIGGER", "OUTCOME", "DURATION", "ERROR"]
    assert len(lines) == 3
    assert all(" cli " in line and " failed " in line for line in lines[1:])
    starts = [line.split()[0] for line in lines[1:]]
    assert starts == sorted(starts, reverse=True)

    status = json.loads(cli(tmp_path, "status", "app.py", "--json").stdout)
    by_id = {job["id"]: job for job in status["jobs"]}
    assert by_id["tick"]["runs"] == 1 and by_id["tick"]["last_success"] is not None
    assert by_id["boom"]["failures"] == 2 and "kaboom" in by_id["boom"]["last_error"]
    row = next(
        line for line in cli(tmp_path, "status", "app.py").stdout.splitlines() if "boom" in line
    )
    assert "kaboom" in row and "…" in row  # the long error is cut short


def test_pause_stops_exec_until_resume(tmp_path: Path) -> None:
    result = cli(tmp_path, "pause", "app.py", "tick")
    assert (result.returncode, result.stdout.count("\n")) == (0, 1)
    assert "tick: paused" in result.stdout

    status = json.loads(cli(tmp_path, "status", "app.py", "--json").stdout)
    assert status["jobs"][0]["status"] == "paused"
    refused = cli(tmp_path, "exec", "app.py", "tick")
    assert refused.returncode == 1 and "paused" in refused.stdout

    result = cli(tmp_path, "resume", "app.py", "tick")
    assert (result.returncode, result.stdout.strip()) == (0, "tick: resumed")
    assert cli(tmp_path, "exec", "app.py", "tick").returncode == 0


def test_flask_bgjobs_status_and_runs_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import Flask

    from bgjobs import JobRegistry
    from bgjobs.flask import BGJobs

    jobs = JobRegistry()

    @jobs.interval("tick", "Tick", hours=1)
    def tick() -> None:
        pass

    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(BGJOBS_AUTOSTART=False, BGJOBS_LOCK_DIR=str(tmp_path / "state"))
    BGJobs(app, registry=jobs)
    runner = flask_cli_runner(app)

    result = runner.invoke(args=["bgjobs", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert [job["id"] for job in json.loads(result.stdout)["jobs"]] == ["tick"]
    result = runner.invoke(args=["bgjobs", "runs", "nope"])
    assert result.exit_code == 2
    assert "no job 'nope'" in result.stderr


def test_runs_show_which_attempt_a_retry_was(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from bgjobs import JobRun, LocalJobManager

    write_app(tmp_path, APP)
    started = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
    with LocalJobManager(env={}, state_dir=str(tmp_path / "state")) as manager:
        assert manager.store is not None
        for attempt, outcome in ((1, "failed"), (2, "completed")):
            run = JobRun(f"run-{attempt}", "tick", "schedule", started, attempt=attempt)
            manager.store.start_run(run)
            manager.store.finish_run(
                JobRun(
                    run.run_id,
                    "tick",
                    "schedule",
                    started,
                    outcome=outcome,  # type: ignore[arg-type]
                    attempt=attempt,
                    duration=0.5,
                    finished=started,
                )
            )
    table = run_cli("runs", "app.py", "tick", cwd=tmp_path, env=env_for(tmp_path))
    assert table.returncode == 0, table.stderr
    assert "completed (attempt 2)" in table.stdout
    assert sum(" failed " in line for line in table.stdout.splitlines()) == 1
