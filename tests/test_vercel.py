"""The vercel runtime: VercelJobManager, vercel_crons, and dispatch by Vercel Cron over HTTP."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any, Dict, List, Optional

import pytest
from support_clock import ManualClock
from support_web import bearer, utc
from werkzeug.test import Client

from bgjobs import InvalidScheduleError, JobRegistry
from bgjobs.config import Settings, get_app_environment
from bgjobs.factory import create_job_manager
from bgjobs.vercel import VercelJobManager, vercel_cron_expression, vercel_crons
from bgjobs.wsgi import create_app

CRON_SECRET = "vercel-cron-secret"
PRODUCTION = {"CRON_SECRET": CRON_SECRET, "BGJOBS_ENV": "production"}


def noop() -> None:
    pass


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(utc(2024, 5, 1, 8, 31, 20).timestamp())


@pytest.fixture
def vercel(clock: ManualClock) -> VercelJobManager:
    return VercelJobManager(clock=clock, env={})


# -- vercel_crons -------------------------------------------------------------------------------


def test_vercel_crons_lists_one_path_and_utc_cron_per_job() -> None:
    jobs = JobRegistry()
    jobs.add_interval("repository-sync", "Repository Synchronization", noop, timedelta(minutes=5))
    jobs.add_interval("hourly", "Hourly", noop, 3600)
    jobs.add_interval("every-two-hours", "Every two hours", noop, 7200)
    jobs.add_interval("daily", "Daily", noop, timedelta(days=1))
    jobs.add_interval("weekly", "Weekly", noop, timedelta(days=7))
    jobs.add_interval("minutely", "Minutely", noop, 60)
    jobs.add_cron("renewal-reminder", "Renewal reminder", noop, "0 9 * * *")
    jobs.add_cron("monthly", "Monthly", noop, "@monthly", timezone="UTC")
    jobs.add_cron("seconds-zero", "Seconds zero", noop, "0 */15 * * * *")
    jobs.add_cron("report:eu", "Report", noop, "30 6 * * 1-5", timezone="Etc/UTC")

    assert vercel_crons(jobs) == [
        {"path": "/api/cron/repository-sync", "schedule": "*/5 * * * *"},
        {"path": "/api/cron/hourly", "schedule": "0 * * * *"},
        {"path": "/api/cron/every-two-hours", "schedule": "0 */2 * * *"},
        {"path": "/api/cron/daily", "schedule": "0 0 * * *"},
        {"path": "/api/cron/weekly", "schedule": "0 0 * * 0"},
        {"path": "/api/cron/minutely", "schedule": "* * * * *"},
        {"path": "/api/cron/renewal-reminder", "schedule": "0 9 * * *"},
        {"path": "/api/cron/monthly", "schedule": "0 0 1 * *"},
        {"path": "/api/cron/seconds-zero", "schedule": "*/15 * * * *"},
        {"path": "/api/cron/report%3Aeu", "schedule": "30 6 * * 1-5"},
    ]


def test_vercel_crons_uses_the_given_prefix() -> None:
    jobs = JobRegistry()
    jobs.add_interval("a", "A", noop, 300)
    assert vercel_crons(jobs, "jobs/") == [{"path": "/jobs/a", "schedule": "*/5 * * * *"}]
    assert vercel_crons(jobs, "/") == [{"path": "/a", "schedule": "*/5 * * * *"}]
    assert vercel_crons(JobRegistry()) == []


@pytest.mark.parametrize(
    ("declare", "fragment"),
    [
        (lambda r: r.add_interval("odd", "Odd", noop, timedelta(minutes=7)), "7m cannot be"),
        (lambda r: r.add_interval("odd", "Odd", noop, 90), "1m30s cannot be"),
        (lambda r: r.add_interval("odd", "Odd", noop, timedelta(days=2)), "cannot be"),
        (lambda r: r.add_cron("odd", "Odd", noop, "0 9 * * *", timezone="Europe/Paris"), "UTC"),
        (lambda r: r.add_cron("odd", "Odd", noop, "*/30 * * * * *"), "seconds"),
        (lambda r: r.add_cron("odd", "Odd", noop, "0 9 * * MON-FRI"), "MON → 1"),
        (lambda r: r.add_cron("odd", "Odd", noop, "0 9 * JAN *"), "numbers"),
        (lambda r: r.add_cron("odd", "Odd", noop, "0 9 1 * 1"), "day of month and the day"),
    ],
)
def test_vercel_crons_refuses_what_vercel_cannot_run_naming_the_job(
    declare: Any, fragment: str
) -> None:
    jobs = JobRegistry()
    jobs.add_interval("fine", "Fine", noop, 300)
    declare(jobs)
    with pytest.raises(InvalidScheduleError, match="job 'odd'") as caught:
        vercel_crons(jobs)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "cron, fires",
    [
        ("*/5 * * * *", 288),
        ("0 * * * *", 24),
        ("0 9,21 * * *", 2),
        ("0,30 9 * * *", 2),
        ("0 9-10 * * 1-5", 2),
        ("15 */12 * * *", 2),
        ("* 9 * * *", 60),
    ],
)
def test_the_hobby_plan_refuses_more_than_one_fire_a_day(cron: str, fires: int) -> None:
    jobs = JobRegistry()
    jobs.add_cron("digest", "Digest", noop, cron)
    with pytest.raises(InvalidScheduleError) as caught:
        vercel_crons(jobs, plan="hobby")
    message = str(caught.value)
    assert "job 'digest': Vercel's Hobby plan runs a cron at most once a day" in message
    assert f"{cron!r} fires {fires} times a day" in message
    assert vercel_crons(jobs, plan="pro") == vercel_crons(jobs)


@pytest.mark.parametrize(
    "cron", ["0 9 * * *", "30 6 * * 1-5", "0 0 1 * *", "5 4 * 1,7 *", "0 9-9 * * 0", "59 23 * * 6"]
)
def test_the_hobby_plan_accepts_one_fire_a_day_or_fewer(cron: str) -> None:
    jobs = JobRegistry()
    jobs.add_cron("digest", "Digest", noop, cron)
    assert vercel_crons(jobs, plan="hobby") == [{"path": "/api/cron/digest", "schedule": cron}]


def test_interval_jobs_of_a_day_or_more_fit_the_hobby_plan() -> None:
    jobs = JobRegistry()
    jobs.add_interval("daily", "Daily", noop, timedelta(days=1))
    jobs.add_interval("weekly", "Weekly", noop, timedelta(days=7))
    assert len(vercel_crons(jobs, plan="hobby")) == 2
    jobs.add_interval("twelve-hours", "Twelve hours", noop, timedelta(hours=12))
    with pytest.raises(InvalidScheduleError, match=r"job 'twelve-hours'.*fires 2 times a day"):
        vercel_crons(jobs, plan="hobby")


def test_a_plan_allows_at_most_100_crons() -> None:
    jobs = JobRegistry()
    for n in range(101):
        jobs.add_cron(f"job-{n}", "Job", noop, f"{n % 60} {n % 24} * * *")
    assert len(vercel_crons(jobs)) == 101  # without a plan, nothing is counted
    with pytest.raises(InvalidScheduleError, match=r"101 jobs.*at most 100 cron jobs"):
        vercel_crons(jobs, plan="pro")


def test_an_unknown_plan_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown Vercel plan 'free'; use one of hobby, pro"):
        vercel_crons(JobRegistry(), plan="free")


@pytest.mark.parametrize("reserved", ["status", "runs", "metrics"])
def test_reserved_ids_are_refused_at_declaration(reserved: str) -> None:
    jobs = JobRegistry()
    with pytest.raises(InvalidScheduleError, match=rf"job '{reserved}'.*{reserved} endpoint"):
        jobs.add_interval(reserved, "Reserved", noop, 300)
    with pytest.raises(InvalidScheduleError, match=rf"job '{reserved}'"):
        VercelJobManager(env={}).schedule_job(reserved, "Reserved", noop, 300)


def test_vercel_crons_reads_bgjobs_timezone_for_cron_jobs_without_one() -> None:
    jobs = JobRegistry()
    jobs.add_cron("report", "Report", noop, "0 9 * * *")
    assert vercel_crons(jobs, env={"BGJOBS_TIMEZONE": "UTC"})[0]["schedule"] == "0 9 * * *"
    with pytest.raises(InvalidScheduleError, match="America/New_York"):
        vercel_crons(jobs, env={"BGJOBS_TIMEZONE": "America/New_York"})


def test_zones_without_any_offset_count_as_utc() -> None:
    from bgjobs.schedules import parse_cron, resolve_timezone

    for name in ("UTC", "Etc/UTC", "Africa/Abidjan"):
        schedule = parse_cron("j", "0 9 * * *", resolve_timezone("j", name))
        assert vercel_cron_expression("j", schedule) == "0 9 * * *"
    london = parse_cron("j", "0 9 * * *", resolve_timezone("j", "Europe/London"))
    with pytest.raises(InvalidScheduleError, match="UTC"):
        vercel_cron_expression("j", london)  # UTC in winter only


# -- the manager --------------------------------------------------------------------------------


def test_factory_builds_the_vercel_manager_when_vercel_is_set() -> None:
    assert isinstance(create_job_manager({"VERCEL": "1"}), VercelJobManager)
    assert isinstance(create_job_manager({"BGJOBS_MODE": "vercel"}), VercelJobManager)


def test_scheduling_refuses_what_vercel_cannot_run(vercel: VercelJobManager) -> None:
    with pytest.raises(InvalidScheduleError, match=r"job 'odd'.*7m"):
        vercel.schedule_job("odd", "Odd", noop, timedelta(minutes=7))
    with pytest.raises(InvalidScheduleError, match=r"job 'paris'.*UTC"):
        vercel.schedule_cron_job("paris", "Paris", noop, "0 9 * * *", timezone="Europe/Paris")
    with pytest.raises(InvalidScheduleError, match=r"job 'fast'.*seconds"):
        vercel.schedule_cron_job("fast", "Fast", noop, "*/10 * * * * *")
    with pytest.raises(InvalidScheduleError, match="job 'status'"):
        vercel.schedule_job("status", "Status", noop, 300)
    assert vercel.get_all_job_statuses() == []


def test_the_manager_starts_no_threads(vercel: VercelJobManager) -> None:
    before = {t.name for t in threading.enumerate()}
    vercel.schedule_job("a", "A", noop, 300)
    vercel.schedule_cron_job("b", "B", noop, "0 9 * * *")
    started = {t.name for t in threading.enumerate()} - before
    assert not [name for name in started if name.startswith("bgjobs")]
    assert [s.status for s in vercel.get_all_job_statuses()] == ["scheduled", "scheduled"]


def test_next_run_is_the_next_utc_cron_fire_and_follows_the_clock(
    vercel: VercelJobManager, clock: ManualClock
) -> None:
    vercel.schedule_job("five", "Five", noop, 300)
    vercel.schedule_cron_job("nine", "Nine", noop, "0 9 * * *")
    assert vercel.get_job_status("five").next_run == utc(2024, 5, 1, 8, 35)  # type: ignore[union-attr]
    assert vercel.get_job_status("nine").next_run == utc(2024, 5, 1, 9, 0)  # type: ignore[union-attr]

    clock.advance(30 * 60)  # 09:01:20 — Vercel did not call; the statuses still look ahead
    nexts = {s.id: s.next_run for s in vercel.get_all_job_statuses()}
    assert nexts == {"five": utc(2024, 5, 1, 9, 5), "nine": utc(2024, 5, 2, 9, 0)}


def test_a_run_records_status_and_metrics_and_moves_next_run(
    vercel: VercelJobManager, clock: ManualClock
) -> None:
    calls: List[str] = []
    vercel.schedule_job("five", "Five", lambda: calls.append("ran"), 300)
    clock.advance(220)  # 08:35:00, when Vercel calls
    assert vercel.trigger_job("five") is True
    status = vercel.get_job_status("five")
    assert status is not None
    assert status.status == "completed"
    assert status.last_run == utc(2024, 5, 1, 8, 35)
    assert status.next_run == utc(2024, 5, 1, 8, 40)
    assert status.schedule == "every 5m"
    assert calls == ["ran"]
    metrics = vercel.get_job_metrics()
    assert (metrics.total_executions, metrics.successful_jobs) == (1, 1)


def test_a_stopped_job_has_no_next_run_and_is_not_dispatched(
    vercel: VercelJobManager, clock: ManualClock
) -> None:
    calls: List[str] = []
    vercel.schedule_job("five", "Five", lambda: calls.append("ran"), 300)
    vercel.stop_job("five")
    clock.advance(3600)
    assert vercel.get_job_status("five").next_run is None  # type: ignore[union-attr]
    assert vercel.dispatch("five").outcome == "stopped"
    assert calls == []


# -- dispatch by Vercel Cron over HTTP ------------------------------------------------------------


def test_vercel_cron_calls_dispatch_with_cron_secret(vercel: VercelJobManager) -> None:
    calls: List[str] = []
    jobs = JobRegistry()
    jobs.add_interval("repository-sync", "Repository Sync", lambda: calls.append("sync"), 300)
    jobs.add_cron("reminder", "Reminder", lambda: calls.append("reminder"), "0 9 * * *")
    jobs.apply_once(vercel)
    client = Client(create_app(vercel, env=PRODUCTION))

    for entry in vercel_crons(jobs):
        assert client.get(entry["path"]).status_code == 401  # Vercel always sends the secret
        response = client.get(entry["path"], headers=bearer(CRON_SECRET))
        assert response.status_code == 200
        job = json.loads(response.get_data(as_text=True))
        assert job["status"] == "completed"
        assert job["next_run"] is not None
    assert calls == ["sync", "reminder"]

    status = json.loads(
        client.get("/api/cron/status", headers=bearer(CRON_SECRET)).get_data(as_text=True)
    )
    assert [job["runs"] for job in status["jobs"]] == [1, 1]
    assert status["metrics"]["total_executions"] == 2
    assert status["metrics"]["successful_jobs"] == 2


def test_vercel_mode_through_the_flask_extension(tmp_path: Any) -> None:
    from flask import Flask

    from bgjobs.flask import BGJobs, get_manager

    calls: List[str] = []
    jobs = JobRegistry()
    jobs.add_interval("sync", "Sync", lambda: calls.append("ran"), 300)
    app = Flask("vercelapp", instance_path=str(tmp_path))
    app.config.update(VERCEL="1", CRON_SECRET=CRON_SECRET, APP_ENV="production")
    BGJobs(app, registry=jobs)
    assert isinstance(get_manager(app), VercelJobManager)
    client = app.test_client()
    (entry,) = vercel_crons(jobs)
    assert client.get(entry["path"]).status_code == 401
    assert client.get(entry["path"], headers=bearer(CRON_SECRET)).status_code == 200
    assert calls == ["ran"]


# -- the app environment on Vercel ----------------------------------------------------------------


@pytest.mark.parametrize(
    "env, expected",
    [
        pytest.param({"VERCEL": "1", "VERCEL_ENV": "production"}, "production", id="production"),
        pytest.param({"VERCEL": "1", "VERCEL_ENV": "preview"}, "preview", id="preview"),
        pytest.param({"VERCEL": "1", "VERCEL_ENV": "development"}, "development", id="vercel-dev"),
        # Vercel always says which; a VERCEL=1 that does not is treated as the worst case.
        pytest.param({"VERCEL": "1"}, "production", id="vercel-without-vercel-env"),
        pytest.param({"VERCEL_ENV": "Preview"}, "preview", id="vercel-env-alone"),
        pytest.param(
            {"VERCEL": "1", "VERCEL_ENV": "preview", "BGJOBS_ENV": "staging"},
            "staging",
            id="bgjobs-env-may-rename-it",
        ),
        pytest.param(
            {"VERCEL": "1", "BGJOBS_ENV": "development"},
            "development",
            id="forced-vercel-mode-on-a-laptop",
        ),
        pytest.param({}, "development", id="not-on-vercel"),
    ],
)
def test_the_app_environment_on_vercel_comes_from_vercel_env(
    env: Dict[str, str], expected: str
) -> None:
    assert get_app_environment(env) == expected
    assert Settings.from_env(env).app_environment == expected


@pytest.mark.parametrize("vercel_env", ["production", "preview"])
@pytest.mark.parametrize("name", ["BGJOBS_ENV", "APP_ENV"])
def test_a_deployment_cannot_call_itself_development(name: str, vercel_env: str) -> None:
    env = {"VERCEL": "1", "VERCEL_ENV": vercel_env, name: "development"}
    with pytest.raises(ValueError, match=f"{name}='development'.*VERCEL_ENV='{vercel_env}'"):
        get_app_environment(env)
    with pytest.raises(ValueError, match=name):
        Settings.from_env(env)


@pytest.mark.parametrize("vercel_env", ["production", "preview", None])
def test_a_vercel_deployment_without_a_secret_refuses_every_request(
    vercel: VercelJobManager, vercel_env: Optional[str]
) -> None:
    calls: List[str] = []
    jobs = JobRegistry()
    jobs.add_interval("sync", "Sync", lambda: calls.append("ran"), 300)
    jobs.apply_once(vercel)
    env = {"VERCEL": "1"} if vercel_env is None else {"VERCEL": "1", "VERCEL_ENV": vercel_env}
    client = Client(create_app(vercel, env=env))

    for path in ("/api/cron/sync", "/api/cron/status", "/api/cron/", "/api/cron/sync/runs"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert "no secret is configured" in response.get_data(as_text=True)
    assert client.post("/api/cron/sync/pause").status_code == 401
    assert calls == []


def test_vercel_dev_runs_without_a_secret(vercel: VercelJobManager) -> None:
    calls: List[str] = []
    jobs = JobRegistry()
    jobs.add_interval("sync", "Sync", lambda: calls.append("ran"), 300)
    jobs.apply_once(vercel)
    client = Client(create_app(vercel, env={"VERCEL": "1", "VERCEL_ENV": "development"}))
    assert client.get("/api/cron/sync").status_code == 200
    assert calls == ["ran"]


def test_flask_on_a_vercel_preview_needs_the_secret(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask import Flask

    from bgjobs.flask import BGJobs

    # As on Vercel: the platform's variables are in the process environment, not app.config.
    for name in ("BGJOBS_ENV", "APP_ENV", "BGJOBS_SECRET", "CRON_SECRET", "BGJOBS_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VERCEL", "1")
    monkeypatch.setenv("VERCEL_ENV", "preview")
    jobs = JobRegistry()
    jobs.add_interval("sync", "Sync", noop, 300)
    app = Flask("previewapp", instance_path=str(tmp_path))
    BGJobs(app, registry=jobs)
    client = app.test_client()
    assert client.get("/api/cron/sync").status_code == 401
    assert client.get("/api/cron/status").status_code == 401


def test_flask_reads_vercel_env_from_app_config(tmp_path: Any) -> None:
    from flask import Flask

    from bgjobs.flask import BGJobs

    for vercel_env, expected in (("development", 200), ("preview", 401)):
        jobs = JobRegistry()
        jobs.add_interval("sync", "Sync", noop, 300)
        app = Flask(f"app-{vercel_env}", instance_path=str(tmp_path / vercel_env))
        app.config.update(VERCEL="1", VERCEL_ENV=vercel_env, BGJOBS_SECRET=None, CRON_SECRET=None)
        BGJobs(app, registry=jobs)
        assert app.test_client().get("/api/cron/status").status_code == expected, vercel_env
