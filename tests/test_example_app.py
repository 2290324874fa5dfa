"""examples/flask_app: its three jobs against a temporary SQLite database, and the app itself."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from flask import Flask
from support_cli import EXAMPLES, REPO, cli_env, flask_cli_runner, run_cli

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))  # the example is the package "flask_app" in there

from flask_app import db
from flask_app import jobs as example

NOW = datetime(2025, 3, 10, 9, 0, tzinfo=timezone.utc)
SECRET = "example-secret"


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """A copy of the example's content folder, free to edit."""
    folder = tmp_path / "content"
    shutil.copytree(EXAMPLES / "flask_app" / "content", folder)
    return folder


@pytest.fixture
def database(tmp_path: Path, content: Path) -> Iterator[str]:
    """An empty example database, with a bare Flask app context pointing the jobs at it."""
    path = str(tmp_path / "example.sqlite3")
    db.init_db(path)
    app = Flask("example-jobs-test")
    app.config.update(DATABASE=path, CONTENT_DIR=str(content))
    with app.app_context():
        yield path


def rows(path: str, sql: str) -> List[Tuple[Any, ...]]:
    with db.connect(path) as conn:
        return [tuple(row) for row in conn.execute(sql)]


def add_subscription(path: str, email: str, expires: datetime, status: str = "active") -> int:
    with db.connect(path) as conn:
        cursor = conn.execute(
            "INSERT INTO subscriptions (email, plan, status, expires_at) VALUES (?, 'pro', ?, ?)",
            (email, status, db.iso(expires)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid


# --- repository-sync ------------------------------------------------------------------


def test_repository_sync_imports_every_content_file_once(database: str) -> None:
    assert example.sync_repository(now=NOW) == {
        "inserted": 4,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
    }
    first = rows(database, "SELECT * FROM documents ORDER BY path")
    assert [(r[0], r[1]) for r in first] == [
        ("guides/idempotency.md", "Idempotent jobs"),
        ("guides/schedules.md", "Choosing a schedule"),
        ("release-notes.json", "Release notes"),
        ("welcome.md", "Welcome"),
    ]

    later = NOW + timedelta(minutes=5)
    assert example.sync_repository(now=later) == {
        "inserted": 0,
        "updated": 0,
        "unchanged": 4,
        "deleted": 0,
    }
    assert rows(database, "SELECT * FROM documents ORDER BY path") == first  # not rewritten


def test_repository_sync_updates_changed_files_and_deletes_removed_ones(
    database: str, content: Path
) -> None:
    example.sync_repository(now=NOW)
    (content / "welcome.md").write_text("# Hello again\n\nNew text.\n", encoding="utf-8")
    (content / "guides" / "schedules.md").unlink()
    (content / "notes.txt").write_text("not content: ignored", encoding="utf-8")
    later = NOW + timedelta(minutes=5)

    assert example.sync_repository(now=later) == {
        "inserted": 0,
        "updated": 1,
        "unchanged": 2,
        "deleted": 1,
    }
    after = rows(database, "SELECT path, title, imported_at, updated_at FROM documents")
    assert ("welcome.md", "Hello again", db.iso(NOW), db.iso(later)) in after
    assert ("release-notes.json", "Release notes", db.iso(NOW), db.iso(NOW)) in after
    assert [r[0] for r in after if r[0] == "guides/schedules.md"] == []
    assert example.sync_repository(now=later)["unchanged"] == 3


# --- subscription-renewal-reminder ------------------------------------------------------


def test_renewal_reminders_are_queued_once_per_subscription_and_period(database: str) -> None:
    soon = add_subscription(database, "soon@example.com", NOW + timedelta(days=2))
    edge = add_subscription(database, "edge@example.com", NOW + timedelta(days=7))
    add_subscription(database, "later@example.com", NOW + timedelta(days=7, seconds=1))
    add_subscription(database, "past@example.com", NOW - timedelta(seconds=1))
    add_subscription(database, "gone@example.com", NOW + timedelta(days=1), status="expired")

    assert example.send_renewal_reminders(now=NOW) == 2
    outbox = "SELECT subscription_id, kind, period_end, recipient, subject FROM outbox ORDER BY id"
    first = rows(database, outbox)
    assert first == [
        (soon, "renewal-reminder", "2025-03-12T09:00:00Z", "soon@example.com",
         "Your pro subscription renews on 2025-03-12"),
        (edge, "renewal-reminder", "2025-03-17T09:00:00Z", "edge@example.com",
         "Your pro subscription renews on 2025-03-17"),
    ]  # fmt: skip

    assert example.send_renewal_reminders(now=NOW) == 0
    assert rows(database, outbox) == first

    # A day later "later" enters the window: only its reminder is new.
    assert example.send_renewal_reminders(now=NOW + timedelta(days=1)) == 1
    assert example.send_renewal_reminders(now=NOW + timedelta(days=1)) == 0
    assert rows(database, outbox)[:2] == first
    assert [r[3] for r in rows(database, outbox)] == [
        "soon@example.com",
        "edge@example.com",
        "later@example.com",
    ]

    # Renewed: a new period, so one new reminder when it comes near.
    with db.connect(database) as conn:
        conn.execute(
            "UPDATE subscriptions SET expires_at = ? WHERE id = ?",
            (db.iso(NOW + timedelta(days=32)), soon),
        )
    assert example.send_renewal_reminders(now=NOW + timedelta(days=26)) == 1
    assert example.send_renewal_reminders(now=NOW + timedelta(days=26)) == 0
    periods = rows(database, f"SELECT period_end FROM outbox WHERE subscription_id = {soon}")
    assert periods == [("2025-03-12T09:00:00Z",), ("2025-04-11T09:00:00Z",)]


def test_outbox_refuses_a_second_reminder_for_the_same_period(database: str) -> None:
    sub = add_subscription(database, "soon@example.com", NOW + timedelta(days=2))
    example.send_renewal_reminders(now=NOW)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"), db.connect(database) as conn:
        conn.execute(
            "INSERT INTO outbox (subscription_id, kind, period_end, recipient, subject, body,"
            " created_at) VALUES (?, 'renewal-reminder', '2025-03-12T09:00:00Z', 'x', 'y', 'z',"
            " 'now')",
            (sub,),
        )


# --- subscription-expired-cleanup -----------------------------------------------------


def test_expired_cleanup_marks_ended_periods_and_is_idempotent(database: str) -> None:
    ended = add_subscription(database, "ended@example.com", NOW - timedelta(days=1))
    exact = add_subscription(database, "exact@example.com", NOW)
    running = add_subscription(database, "running@example.com", NOW + timedelta(seconds=1))
    old = add_subscription(database, "old@example.com", NOW - timedelta(days=90), "expired")

    assert example.expire_subscriptions(now=NOW) == 2
    statuses = "SELECT id, status FROM subscriptions ORDER BY id"
    expected = [(ended, "expired"), (exact, "expired"), (running, "active"), (old, "expired")]
    assert rows(database, statuses) == expected

    assert example.expire_subscriptions(now=NOW) == 0
    assert rows(database, statuses) == expected


def test_seed_data_gives_every_job_something_to_do(database: str) -> None:
    with db.connect(database) as conn:
        db.seed_subscriptions(conn, NOW)
    assert example.send_renewal_reminders(now=NOW) == 2
    assert example.expire_subscriptions(now=NOW) == 1


# --- the registry and the app ---------------------------------------------------------


def test_registry_declares_the_three_jobs_with_their_schedules() -> None:
    from bgjobs.vercel import vercel_crons

    assert vercel_crons(example.jobs) == [
        {"path": "/api/cron/repository-sync", "schedule": "*/5 * * * *"},
        {"path": "/api/cron/subscription-renewal-reminder", "schedule": "0 9 * * *"},
        {"path": "/api/cron/subscription-expired-cleanup", "schedule": "0 0 * * *"},
    ]


def test_bgjobs_list_reads_the_example_registry() -> None:
    result = run_cli("list", "examples/flask_app/jobs.py", cwd=REPO)
    assert result.returncode == 0, result.stderr
    for job_id in (
        "repository-sync",
        "subscription-renewal-reminder",
        "subscription-expired-cleanup",
    ):
        assert job_id in result.stdout


def test_the_app_serves_its_pages_and_runs_jobs_through_the_dispatch_endpoint(
    tmp_path: Path,
) -> None:
    pytest.importorskip("bgjobs.flask")
    from flask_app.app import create_app

    from bgjobs.flask import get_manager

    app = create_app(
        {
            "TESTING": True,
            "DATABASE": str(tmp_path / "app.sqlite3"),
            "BGJOBS_MODE": "vercel",  # no timers: jobs run only when dispatched
            "BGJOBS_SECRET": SECRET,
        }
    )
    try:
        client = app.test_client()
        auth = {"Authorization": f"Bearer {SECRET}"}
        assert client.post("/api/cron/repository-sync").status_code == 401

        answer = client.post("/api/cron/repository-sync", headers=auth)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.get_json()["status"] == "completed"
        page = client.get("/").get_data(as_text=True)
        assert "Choosing a schedule" in page and "release-notes.json" in page

        for job_id in ("subscription-renewal-reminder", "subscription-expired-cleanup"):
            answer = client.post(f"/api/cron/{job_id}", headers=auth)
            assert answer.get_json()["status"] == "completed"
        client.post("/api/cron/subscription-renewal-reminder", headers=auth)
        page = client.get("/subscriptions").get_data(as_text=True)
        assert page.count("subscription renews on") == 2  # seeded: two due, reminded once
        assert "<td>barbara@example.com</td><td>basic</td>\n      <td>expired</td>" in page

        status = json.loads(client.get("/api/cron/status", headers=auth).get_data())
        assert [job["runs"] for job in status["jobs"]] == [1, 2, 1]
    finally:
        get_manager(app).stop_all_jobs(wait=True, timeout=5)


def test_python_m_bgjobs_exec_runs_a_job_in_the_example_app(tmp_path: Path) -> None:
    """Trigger.dev's Python mode: ``python -m bgjobs exec $BGJOBS_APP JOB_ID``."""
    database = tmp_path / "exec.sqlite3"
    env = cli_env(FLASK_DATABASE=str(database), BGJOBS_LOCK_DIR=str(tmp_path / "locks"))
    app = "examples/flask_app/app.py:create_app"

    result = run_cli("exec", app, "repository-sync", cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("repository-sync: completed in "), result.stdout
    assert len(rows(str(database), "SELECT path FROM documents")) == 4

    result = run_cli("exec", app, "subscription-renewal-reminder", cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert len(rows(str(database), "SELECT id FROM outbox")) == 2  # the seeded two are due

    # The bare file finds create_app too; the registry alone would run outside the app.
    result = run_cli("exec", "examples/flask_app/app.py", "repository-sync", cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr


def test_the_flask_command_lists_the_example_apps_jobs(tmp_path: Path) -> None:
    """``flask --app examples/flask_app/app.py bgjobs list`` as the README shows it: Flask
    finds the group through bgjobs' ``flask.commands`` entry point."""
    env = cli_env(
        FLASK_DATABASE=str(tmp_path / "list.sqlite3"), BGJOBS_LOCK_DIR=str(tmp_path / "locks")
    )
    command = [sys.executable, "-m", "flask", "--app", "examples/flask_app/app.py"]
    result = subprocess.run(
        [*command, "bgjobs", "list"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["JOB", "SCHEDULE", "NEXT", "FIRE", "TIMES", "(UTC)"]
    assert [line.split()[0] for line in lines[1:4]] == [
        "repository-sync",
        "subscription-renewal-reminder",
        "subscription-expired-cleanup",
    ]


def test_flask_bgjobs_exec_runs_a_job_in_the_example_app(tmp_path: Path) -> None:
    from flask_app.app import create_app

    from bgjobs.flask import get_manager

    database = tmp_path / "cli.sqlite3"
    app = create_app({"DATABASE": str(database), "BGJOBS_MODE": "disabled"})
    try:
        result = flask_cli_runner(app).invoke(args=["bgjobs", "exec", "repository-sync"])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("repository-sync: completed in ")
        assert len(rows(str(database), "SELECT path FROM documents")) == 4
    finally:
        get_manager(app).stop_all_jobs(wait=True, timeout=5)
