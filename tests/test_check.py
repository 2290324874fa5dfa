"""`bgjobs check APP` and JobRegistry.check(): every schedule valid for the runtime, the
next five fire times in the job's timezone, one line per problem."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from support_cli import run_cli, write_app

from bgjobs import JobRegistry
from bgjobs.check import check_registry
from bgjobs.cli import main

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")

APP = """
    from bgjobs import JobRegistry

    jobs = JobRegistry()


    @jobs.interval("repository-sync", "Repository Synchronization", minutes=5)
    def sync():
        pass


    @jobs.cron("report", "Report", "0 9 * * *", timezone="Europe/Paris")
    def report():
        pass


    @jobs.interval("odd", "Odd", minutes=7)
    def odd():
        pass


    @jobs.cron("half-minute", "Every 30 s", "*/30 * * * * *")
    def half_minute():
        pass
"""


def registry() -> JobRegistry:
    jobs = JobRegistry()
    jobs.add_interval("repository-sync", "Sync", lambda: None, 300)
    jobs.add_cron("report", "Report", lambda: None, "0 9 * * *", timezone="Europe/Paris")
    jobs.add_interval("odd", "Odd", lambda: None, 420)
    jobs.add_cron("half-minute", "Every 30 s", lambda: None, "*/30 * * * * *")
    jobs.add_cron("night", "Night", lambda: None, "30 2 * * *")
    return jobs


def test_a_registry_that_runs_locally_has_no_problems() -> None:
    assert registry().check(mode="local", env={}) == []


def test_each_remote_runtime_names_the_jobs_it_cannot_run() -> None:
    vercel = registry().check(mode="vercel", env={})
    assert [p.split(":")[0] for p in vercel] == ["job 'report'", "job 'odd'", "job 'half-minute'"]
    assert "Vercel Cron runs in UTC" in vercel[0]
    assert "7m cannot be expressed exactly as a cron" in vercel[1]
    trigger = registry().check(mode="trigger-dev", env={})
    assert [p.split(":")[0] for p in trigger] == ["job 'odd'", "job 'half-minute'"]
    assert all("\n" not in p for p in vercel + trigger)


def test_the_mode_comes_from_the_environment_by_default() -> None:
    assert len(registry().check(env={"VERCEL": "1", "VERCEL_ENV": "production"})) == 3
    assert registry().check(env={}) == []


def test_a_bad_default_timezone_is_a_problem_of_each_cron_without_one() -> None:
    problems = registry().check(mode="local", env={"BGJOBS_TIMEZONE": "Mars/Base"})
    assert [p.split(":")[0] for p in problems] == ["job 'half-minute'", "job 'night'"]
    assert "unknown timezone 'Mars/Base'" in problems[0]


def test_next_five_fires_in_the_jobs_timezone_across_a_dst_change() -> None:
    now = datetime(2026, 3, 27, 12, tzinfo=UTC)
    checks = {c.id: c for c in check_registry(registry(), mode="local", env={}, now=now)}
    report = checks["report"]
    assert report.problem is None and report.runs_as is None
    assert [t.isoformat() for t in report.next_fires] == [
        "2026-03-28T09:00:00+01:00",
        "2026-03-29T09:00:00+02:00",  # summer time from the 29th
        "2026-03-30T09:00:00+02:00",
        "2026-03-31T09:00:00+02:00",
        "2026-04-01T09:00:00+02:00",
    ]
    assert all(t.tzinfo is not None and t.tzinfo == PARIS for t in report.next_fires)
    assert checks["repository-sync"].next_fires == [
        now + timedelta(minutes=5 * k) for k in range(1, 6)
    ]
    assert checks["half-minute"].next_fires[:2] == [
        now + timedelta(seconds=30),
        now + timedelta(seconds=60),
    ]


def test_remote_fires_are_those_of_the_cron_the_runtime_is_given() -> None:
    now = datetime(2026, 3, 27, 12, 1, 10, tzinfo=UTC)
    checks = {c.id: c for c in check_registry(registry(), mode="trigger-dev", env={}, now=now)}
    sync = checks["repository-sync"]
    assert sync.runs_as == "*/5 * * * *"
    assert sync.next_fires[0] == datetime(2026, 3, 27, 12, 5, tzinfo=UTC)  # on the clock's grid
    assert checks["report"].runs_as == "0 9 * * *"
    assert checks["report"].next_fires[0].isoformat() == "2026-03-28T09:00:00+01:00"
    assert checks["odd"].problem is not None and checks["odd"].next_fires == []


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be 'local', 'trigger-dev', 'vercel'"):
        registry().check(mode="cloud", env={})  # type: ignore[arg-type]


def test_bgjobs_check_prints_the_next_five_fires_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_app(
        tmp_path, APP.replace('"*/30 * * * * *"', '"@hourly"').replace("minutes=7", "minutes=10")
    )
    monkeypatch.delenv("BGJOBS_MODE", raising=False)
    monkeypatch.delenv("VERCEL", raising=False)
    with freeze_time("2026-03-28T12:00:00Z"):
        status = main(["check", str(path)])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["JOB", "SCHEDULE"]
    assert "NEXT 5 FIRE TIMES (THE JOB'S TIMEZONE)" in lines[0]
    (report,) = [line for line in lines if line.startswith("report ")]
    assert "cron 0 9 * * * (Europe/Paris)" in report
    assert re.findall(r"\S+\+0[12]:00", report) == [
        "2026-03-29T09:00:00+02:00",
        "2026-03-30T09:00:00+02:00",
        "2026-03-31T09:00:00+02:00",
        "2026-04-01T09:00:00+02:00",
        "2026-04-02T09:00:00+02:00",
    ]
    (sync,) = [line for line in lines if line.startswith("repository-sync ")]
    assert "2026-03-28T12:05:00Z" in sync and "2026-03-28T12:25:00Z" in sync
    assert lines[-1] == "4 jobs checked for the local runtime: no problems"


def test_bgjobs_check_exits_1_with_one_line_per_problem(tmp_path: Path) -> None:
    write_app(tmp_path, APP)
    result = run_cli("check", "app.py", "--mode", "vercel", cwd=tmp_path)
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert [line.split(":")[:2] for line in problems] == [
        ["bgjobs", " problem"],
        ["bgjobs", " problem"],
        ["bgjobs", " problem"],
    ]
    assert [re.search(r"job '([^']+)'", line).group(1) for line in problems] == [  # type: ignore[union-attr]
        "report",
        "odd",
        "half-minute",
    ]
    assert "repository-sync  every 5m, runs as '*/5 * * * *'" in result.stdout
    assert result.stdout.splitlines()[-1] == "4 jobs checked for the vercel runtime: 3 problems"


def test_bgjobs_check_usage_errors_exit_2(tmp_path: Path) -> None:
    write_app(tmp_path, APP)
    result = run_cli("check", "missing.py", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("bgjobs: error:")
    result = run_cli("check", "app.py", "--mode", "cloud", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'cloud'" in result.stderr
    result = run_cli("--help", cwd=tmp_path)
    assert re.search(r"^    check ", result.stdout, re.M)


def test_policies_a_runtime_cannot_honour_are_problems() -> None:
    jobs = JobRegistry()

    @jobs.cron("late-ok", "Late", "0 9 * * *", misfire_grace=600)
    def late() -> None: ...

    @jobs.cron("retried", "Retried", "0 9 * * *", retries=2)
    def retried() -> None: ...

    @jobs.interval("spread", "Spread", minutes=5, jitter=30)
    def spread() -> None: ...

    assert jobs.check(mode="local", env={}) == []
    trigger = jobs.check(mode="trigger-dev", env={})
    assert [p.split(":")[0] for p in trigger] == ["job 'late-ok'", "job 'spread'"]
    assert "cannot honour misfire_grace=600" in trigger[0]
    vercel = jobs.check(mode="vercel", env={})
    assert [p.split(":")[0] for p in vercel] == ["job 'late-ok'", "job 'retried'", "job 'spread'"]
    assert "Vercel Cron cannot honour retries=2" in vercel[1]
