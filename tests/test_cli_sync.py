"""`bgjobs sync APP [--prune]` in a real subprocess against the fake Trigger.dev server."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterator

import pytest
from fake_triggerdev import FakeTriggerDev
from support_cli import cli_env, run_cli
from support_triggerdev import trigger_env

APP = textwrap.dedent(
    """
    from bgjobs import JobRegistry

    jobs = JobRegistry()

    @jobs.interval("repository-sync", "Repository Synchronization", minutes=5)
    def sync_repository():
        pass

    @jobs.cron("renewal-reminder", "Renewal Reminder", "0 9 * * *", timezone="Europe/Paris")
    def remind():
        pass
    """
)


@pytest.fixture
def fake() -> Iterator[FakeTriggerDev]:
    with FakeTriggerDev() as server:
        yield server


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "deploy_jobs.py"
    path.write_text(APP)
    return path


def test_sync_creates_then_leaves_unchanged_schedules(
    fake: FakeTriggerDev, app_file: Path, tmp_path: Path
) -> None:
    env = cli_env(**trigger_env(fake))
    first = run_cli("sync", str(app_file), cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "created  repository-sync  */5 * * * *  UTC" in first.stdout
    assert "created  renewal-reminder  0 9 * * *  Europe/Paris" in first.stdout
    keys = sorted(s["deduplicationKey"] for s in fake.schedules)
    assert keys == ["bgjobs:production:renewal-reminder", "bgjobs:production:repository-sync"]

    writes_before = len(fake.writes())
    second = run_cli("sync", str(app_file), cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert "0 created, 0 updated, 2 unchanged, 0 removed" in second.stdout
    assert len(fake.writes()) == writes_before  # an unchanged schedule is not written


def test_sync_prune_removes_only_stale_schedules_of_its_environment(
    fake: FakeTriggerDev, app_file: Path, tmp_path: Path
) -> None:
    fake.add_schedule("bgjobs-dispatch", "0 * * * *", deduplication_key="bgjobs:production:old")
    fake.add_schedule("bgjobs-dispatch", "0 * * * *", deduplication_key="bgjobs:staging:old")
    fake.add_schedule("other-task", "0 * * * *", deduplication_key="someone-elses")
    result = run_cli(
        "sync", str(app_file), "--prune", cwd=tmp_path, env=cli_env(**trigger_env(fake))
    )
    assert result.returncode == 0, result.stderr
    assert "removed  old" in result.stdout
    keys = {s["deduplicationKey"] for s in fake.schedules}
    assert "bgjobs:production:old" not in keys
    assert {"bgjobs:staging:old", "someone-elses"} <= keys


def test_sync_without_an_api_key_is_one_line_and_exit_2(app_file: Path, tmp_path: Path) -> None:
    result = run_cli("sync", str(app_file), cwd=tmp_path, env=cli_env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgjobs: error:")
    assert "TRIGGER_DEV_API_KEY" in lines[0]


def test_sync_failure_exits_1_without_leaking_the_key(
    fake: FakeTriggerDev, app_file: Path, tmp_path: Path
) -> None:
    # Every answer is a 500 that quotes the key back. Two attempts per call (instead of
    # five, with up to 7.5 s of backoff each) still log a retry and give up.
    fake.fail_next(500, count=50, body={"error": f"cannot handle Bearer {fake.api_key}"})
    env = cli_env(**trigger_env(fake, TRIGGER_DEV_MAX_ATTEMPTS="2"))
    result = run_cli("sync", str(app_file), "--timeout", "60", cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 1
    assert fake.api_key not in result.stdout + result.stderr
    assert "bgjobs: error:" in result.stderr
    assert "retrying in" in result.stderr and "gave up after 2 attempts" in result.stderr
    assert "cannot handle Bearer ***" in result.stderr  # the server's text, scrubbed
