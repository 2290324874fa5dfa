"""The Flask extension (bgjobs.flask), through Flask's test client."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Callable, Iterator, List

import pytest
from flask import Flask, current_app, g
from support_cli import flask_cli_runner
from support_web import WAIT, BlockingJob, Recorder, bearer, in_thread

import bgjobs.flask
from bgjobs import JobRegistry, LocalJobManager, NoOpJobManager, VercelJobManager
from bgjobs.factory import get_job_manager
from bgjobs.flask import BGJobs, BGJobsState, get_manager, get_state

SECRET = "flask-secret"

_SETTINGS = (
    "BGJOBS_SECRET",
    "CRON_SECRET",
    "BGJOBS_MODE",
    "BGJOBS_ENV",
    "APP_ENV",
    "VERCEL",
    "DISABLE_AUTO_SYNC",
    "BGJOBS_URL_PREFIX",
    "BGJOBS_LOCK_DIR",
    "BGJOBS_AUTOSTART",
    "BGJOBS_TIMEZONE",
    "TRIGGER_DEV_ENABLED",
    "TRIGGER_DEV_API_KEY",
    "TRIGGER_SECRET_KEY",
    "WERKZEUG_RUN_MAIN",
    "FLASK_DEBUG",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_app(tmp_path: Any) -> Iterator[Callable[..., Flask]]:
    """Flask apps with their instance folder in tmp_path; their managers stop afterwards."""
    apps: List[Flask] = []

    def make(name: str = "testapp", *, debug: bool = False, **config: Any) -> Flask:
        app = Flask(name, instance_path=str(tmp_path / name))
        app.debug = debug
        app.config.update(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        state = app.extensions.get("bgjobs")
        if state is not None:
            state.manager.stop_all_jobs(wait=True, timeout=WAIT)


def registry_with(*jobs: tuple[str, Callable[[], Any]], seconds: float = 3600) -> JobRegistry:
    registry = JobRegistry()
    for job_id, func in jobs:
        registry.add_interval(job_id, job_id.title(), func, seconds)
    return registry


def noop() -> None:
    pass


def payload(response: Any) -> Any:
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(response.get_data(as_text=True))


# -- set-up ---------------------------------------------------------------------------------------


def test_init_app_twice_on_one_app_raises(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    ext = BGJobs(app)
    with pytest.raises(RuntimeError, match="already set up on this Flask app"):
        ext.init_app(app)
    with pytest.raises(RuntimeError, match="already set up"):
        BGJobs(app)


def test_factory_pattern_keeps_state_in_app_extensions(make_app: Callable[..., Flask]) -> None:
    registry = registry_with(("sync", noop))
    ext = BGJobs(registry=registry)
    app = make_app()
    ext.init_app(app)

    assert not hasattr(ext, "app")
    state = app.extensions["bgjobs"]
    assert isinstance(state, BGJobsState)
    assert state.extension is ext
    assert get_state(app) is state
    assert get_manager(app) is state.manager
    assert ext.manager is state.manager  # outside a context: the only app
    with app.app_context():
        assert get_manager() is state.manager
        assert ext.manager is state.manager
    assert "bgjobs" in app.blueprints
    assert [s.id for s in state.manager.get_all_job_statuses()] == ["sync"]


def test_each_app_gets_its_own_manager_not_the_singleton(make_app: Callable[..., Flask]) -> None:
    ext = BGJobs(registry=registry_with(("sync", noop)))
    one, two = make_app("one"), make_app("two")
    ext.init_app(one)
    ext.init_app(two)
    assert get_manager(one) is not get_manager(two)
    assert get_manager(one) is not get_job_manager()
    with two.app_context():
        assert ext.manager is get_manager(two)
    with pytest.raises(RuntimeError, match="2 apps"):
        ext.manager  # noqa: B018 — ambiguous outside an app context


def test_registry_given_to_init_app_wins(make_app: Callable[..., Flask]) -> None:
    ext = BGJobs(registry=registry_with(("from-constructor", noop)))
    app = make_app()
    ext.init_app(app, registry=registry_with(("from-init-app", noop)))
    assert [s.id for s in get_manager(app).get_all_job_statuses()] == ["from-init-app"]


def test_get_manager_needs_an_app_with_bgjobs(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(RuntimeError, match="no Flask app context"):
        get_manager()
    app = make_app()
    with pytest.raises(RuntimeError, match="not set up"):
        get_manager(app)
    with app.app_context(), pytest.raises(RuntimeError, match="not set up"):
        get_manager()


# -- configuration --------------------------------------------------------------------------------


def test_config_defaults_are_recorded_in_app_config(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    BGJobs(app)
    assert app.config["BGJOBS_URL_PREFIX"] == "/api/cron"
    assert app.config["BGJOBS_SECRET"] is None
    assert app.config["BGJOBS_MODE"] is None
    assert app.config["BGJOBS_LOCK_DIR"] == os.path.join(app.instance_path, "bgjobs")
    assert app.config["BGJOBS_AUTOSTART"] is True
    assert isinstance(get_manager(app), LocalJobManager)


def test_app_config_wins_over_the_environment(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BGJOBS_SECRET", "from-env")
    monkeypatch.setenv("BGJOBS_MODE", "disabled")
    app = make_app(BGJOBS_SECRET=SECRET, BGJOBS_MODE="local", BGJOBS_ENV="production")
    BGJobs(app)
    client = app.test_client()
    assert client.get("/api/cron/status", headers=bearer(SECRET)).status_code == 200
    assert client.get("/api/cron/status", headers=bearer("from-env")).status_code == 401
    assert isinstance(get_manager(app), LocalJobManager)
    assert get_state(app).settings.secret == SECRET


def test_environment_is_used_when_app_config_is_silent(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRON_SECRET", "vercel-secret")
    monkeypatch.setenv("BGJOBS_URL_PREFIX", "/hooks/jobs/")
    monkeypatch.setenv("BGJOBS_ENV", "production")
    monkeypatch.setenv("BGJOBS_AUTOSTART", "false")
    app = make_app()
    BGJobs(app, registry=registry_with(("sync", noop)))
    assert app.config["BGJOBS_URL_PREFIX"] == "/hooks/jobs/"
    assert app.config["BGJOBS_AUTOSTART"] is False
    client = app.test_client()
    assert client.get("/hooks/jobs/status", headers=bearer("vercel-secret")).status_code == 200
    assert client.get("/hooks/jobs/status").status_code == 401
    assert client.get("/api/cron/status").status_code == 404
    assert get_manager(app).get_all_job_statuses() == []


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        ({"BGJOBS_MODE": "disabled"}, NoOpJobManager),
        ({"DISABLE_AUTO_SYNC": "1"}, NoOpJobManager),
        ({"BGJOBS_MODE": "vercel"}, VercelJobManager),
        ({"VERCEL": "1"}, VercelJobManager),
        ({"BGJOBS_MODE": "local"}, LocalJobManager),
    ],
)
def test_mode_comes_from_app_config(
    make_app: Callable[..., Flask], config: dict[str, str], kind: type
) -> None:
    app = make_app(**config)
    BGJobs(app)
    assert type(get_manager(app)) is kind


def test_bad_mode_fails_init_app_with_its_name(make_app: Callable[..., Flask]) -> None:
    app = make_app(BGJOBS_MODE="celery")
    with pytest.raises(ValueError, match="celery"):
        BGJobs(app)
    assert "bgjobs" not in app.extensions


def test_lock_dir_defaults_under_instance_path_and_reaches_the_local_manager(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    BGJobs(app)
    manager = get_manager(app)
    assert isinstance(manager, LocalJobManager)
    assert manager.lock_dir == os.path.join(app.instance_path, "bgjobs")
    assert get_state(app).settings.lock_dir == manager.lock_dir


def test_lock_dir_from_the_environment(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("BGJOBS_LOCK_DIR", str(tmp_path / "shared-locks"))
    app = make_app()
    BGJobs(app)
    assert app.config["BGJOBS_LOCK_DIR"] == str(tmp_path / "shared-locks")
    assert get_manager(app).lock_dir == str(tmp_path / "shared-locks")  # type: ignore[attr-defined]


def test_lock_dir_can_be_turned_off(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BGJOBS_LOCK_DIR", "/should/not/be/used")
    app = make_app(BGJOBS_LOCK_DIR=None)
    BGJobs(app)
    assert get_manager(app).lock_dir is None  # type: ignore[attr-defined]
    assert get_state(app).settings.lock_dir is None


# -- endpoints ------------------------------------------------------------------------------------


def test_endpoints_are_mounted_with_auth(make_app: Callable[..., Flask]) -> None:
    calls: List[str] = []
    app = make_app(BGJOBS_SECRET=SECRET)
    BGJobs(app, registry=registry_with(("sync", lambda: calls.append("ran"))))
    client = app.test_client()

    response = client.get("/api/cron/status")
    assert response.status_code == 401
    assert payload(response)["error"]["status"] == 401
    assert client.post("/api/cron/sync", headers=bearer("wrong")).status_code == 401
    assert calls == []

    response = client.get("/api/cron/status", headers=bearer(SECRET))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    status = payload(response)
    assert [job["id"] for job in status["jobs"]] == ["sync"]
    assert status["metrics"]["total_executions"] == 0

    response = client.post("/api/cron/sync", headers=bearer(SECRET))
    assert response.status_code == 200
    job = payload(response)
    assert job["id"] == "sync" and job["status"] == "completed" and job["runs"] == 1
    job.pop("run")  # this run's record: see test_http_history.py
    assert job == get_manager(app).get_job_status("sync").to_dict()  # type: ignore[union-attr]
    assert calls == ["ran"]


def test_no_secret_is_allowed_in_development_only(make_app: Callable[..., Flask]) -> None:
    dev = make_app("dev")
    BGJobs(dev)
    assert dev.test_client().get("/api/cron/status").status_code == 200

    prod = make_app("prod", APP_ENV="production")
    BGJobs(prod)
    response = prod.test_client().get("/api/cron/status")
    assert response.status_code == 401
    assert "no secret is configured" in payload(response)["error"]["message"]


def test_404_405_and_paths(make_app: Callable[..., Flask]) -> None:
    app = make_app(BGJOBS_SECRET=SECRET)
    BGJobs(app, registry=registry_with(("sync", noop)))
    client = app.test_client()
    assert payload(client.get("/api/cron/nope", headers=bearer(SECRET)))["error"]["status"] == 404
    for method in ("DELETE", "PROPFIND", "HEAD"):
        response = client.open("/api/cron/sync", method=method, headers=bearer(SECRET))
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET, POST, OPTIONS"
    response = client.post("/api/cron/status", headers=bearer(SECRET))
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert get_manager(app).get_job_status("sync").runs == 0  # type: ignore[union-attr]


def test_dispatch_of_a_running_job_answers_409(make_app: Callable[..., Flask]) -> None:
    job = BlockingJob()
    app = make_app(BGJOBS_SECRET=SECRET)
    BGJobs(app, registry=registry_with(("slow", job)))

    first = in_thread(lambda: app.test_client().post("/api/cron/slow", headers=bearer(SECRET)))
    assert job.started.wait(WAIT)
    try:
        second = app.test_client().post("/api/cron/slow", headers=bearer(SECRET))
        assert second.status_code == 409
        assert "already running" in payload(second)["error"]["message"]
    finally:
        job.release.set()
    assert first.get().status_code == 200
    assert job.calls == 1


def test_dispatch_of_a_stopped_job_answers_409(make_app: Callable[..., Flask]) -> None:
    calls: List[str] = []
    app = make_app(BGJOBS_SECRET=SECRET)
    BGJobs(app, registry=registry_with(("sync", lambda: calls.append("ran"))))
    get_manager(app).stop_job("sync")
    response = app.test_client().post("/api/cron/sync", headers=bearer(SECRET))
    assert response.status_code == 409
    assert payload(response)["job"]["status"] == "stopped"
    assert calls == []


def test_html_page_escapes_job_names(make_app: Callable[..., Flask]) -> None:
    app = make_app(BGJOBS_SECRET=SECRET)
    registry = JobRegistry()
    registry.add_interval("evil", "<script>alert(1)</script>", noop, 3600)
    BGJobs(app, registry=registry)
    client = app.test_client()
    assert client.get("/api/cron/").status_code == 401
    for path in (f"/api/cron/?token={SECRET}", f"/api/cron?token={SECRET}"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        page = response.get_data(as_text=True)
        assert "<script" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert 'data-job-id="evil"' in page


def test_flask_and_bare_wsgi_answer_alike(make_app: Callable[..., Flask]) -> None:
    from werkzeug.test import Client

    from bgjobs.wsgi import create_app

    app = make_app(BGJOBS_SECRET=SECRET)
    BGJobs(app, registry=registry_with(("sync", noop)))
    bare = Client(create_app(get_manager(app), secret=SECRET, env={}))
    for method, path, headers in (
        ("GET", "/api/cron/status", bearer(SECRET)),
        ("GET", "/api/cron/status", {}),
        ("DELETE", "/api/cron/sync", {}),
        ("GET", "/api/cron/missing", bearer(SECRET)),
    ):
        ours = app.test_client().open(path, method=method, headers=headers)
        theirs = bare.open(path, method=method, headers=headers)
        assert ours.status_code == theirs.status_code
        assert ours.get_data() == theirs.get_data()
        for name in ("Content-Type", "Cache-Control", "Allow", "WWW-Authenticate"):
            assert ours.headers.get(name) == theirs.headers.get(name)


# -- app context ----------------------------------------------------------------------------------


def _context_probe() -> str:
    g.touched = "yes"
    return f"{current_app.name}:{g.touched}"


def test_dispatched_job_runs_inside_the_app_context(make_app: Callable[..., Flask]) -> None:
    recorder = Recorder(_context_probe)
    app = make_app("ctxapp", BGJOBS_SECRET=SECRET)
    BGJobs(app, registry=registry_with(("probe", recorder)))
    response = app.test_client().post("/api/cron/probe", headers=bearer(SECRET))
    assert payload(response)["status"] == "completed"
    assert recorder.values == ["ctxapp:yes"]


def test_job_triggered_from_a_plain_thread_runs_inside_the_app_context(
    make_app: Callable[..., Flask],
) -> None:
    recorder = Recorder(_context_probe)
    app = make_app("threadapp")
    BGJobs(app, registry=registry_with(("probe", recorder)))
    result = in_thread(lambda: get_manager(app).trigger_job("probe"))
    assert result.get() is True
    assert recorder.values == ["threadapp:yes"]


def test_timer_tick_runs_inside_the_app_context(make_app: Callable[..., Flask]) -> None:
    recorder = Recorder(_context_probe)
    app = make_app("timerapp", BGJOBS_LOCK_DIR=None)
    BGJobs(app, registry=registry_with(("tick", recorder), seconds=0.01))
    assert recorder.ran.wait(WAIT)
    get_manager(app).stop_all_jobs(wait=True, timeout=WAIT)
    assert recorder.values[0] == "timerapp:yes"


# -- starting, and the debug reloader ------------------------------------------------------------


def _job_ids(app: Flask) -> List[str]:
    return [s.id for s in get_manager(app).get_all_job_statuses()]


def test_jobs_are_scheduled_at_init_app_outside_debug(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    BGJobs(app, registry=registry_with(("sync", noop)))
    assert _job_ids(app) == ["sync"]
    assert get_state(app).started


def test_reloader_parent_does_not_schedule(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    app = make_app(debug=True)
    BGJobs(app, registry=registry_with(("sync", noop)))
    assert _job_ids(app) == []
    assert not get_state(app).started


def test_reloader_child_schedules_at_init_app(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    app = make_app(debug=True)
    BGJobs(app, registry=registry_with(("sync", noop)))
    assert _job_ids(app) == ["sync"]


def test_debug_without_reloader_schedules_on_the_first_request(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(debug=True)
    BGJobs(app, registry=registry_with(("sync", noop)))
    assert _job_ids(app) == []

    @app.route("/")
    def index() -> str:
        return "home"

    client = app.test_client()
    assert client.get("/").get_data() == b"home"
    assert _job_ids(app) == ["sync"]
    client.get("/")
    assert _job_ids(app) == ["sync"]


def test_autostart_false_waits_for_start(make_app: Callable[..., Flask]) -> None:
    ext = BGJobs(registry=registry_with(("sync", noop)))
    app = make_app(BGJOBS_AUTOSTART=False)
    ext.init_app(app)
    assert _job_ids(app) == []
    assert ext.start(app) is True
    assert ext.start(app) is False
    assert _job_ids(app) == ["sync"]


def test_without_a_registry_the_endpoints_still_work(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    ext = BGJobs(app)
    assert ext.start(app) is False
    manager = get_manager(app)
    manager.schedule_job("manual", "Manual", noop, 3600)
    response = app.test_client().post("/api/cron/manual")
    assert payload(response)["runs"] == 1


# -- the `flask bgjobs` commands ------------------------------------------------------------------


def test_flask_bgjobs_lists_every_command(make_app: Callable[..., Flask]) -> None:
    app = make_app(BGJOBS_MODE="disabled")
    BGJobs(app, registry=registry_with(("sync", noop)))
    result = flask_cli_runner(app).invoke(args=["bgjobs", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("run", "list", "exec", "sync", "vercel-json"):
        assert f"  {name} " in result.output


def test_flask_bgjobs_check_reads_the_apps_config(make_app: Callable[..., Flask]) -> None:
    app = make_app(BGJOBS_MODE="disabled", BGJOBS_TIMEZONE="Mars/Base")
    registry = registry_with(("sync", noop))
    registry.add_cron("nightly", "Nightly", noop, "0 3 * * *")  # no timezone: the app's
    BGJobs(app, registry=registry)
    result = flask_cli_runner(app).invoke(args=["bgjobs", "check"])
    assert result.exit_code == 1
    assert "bgjobs: problem: job 'nightly': unknown timezone 'Mars/Base'" in result.stderr
    assert "2 jobs checked for the disabled runtime: 1 problem" in result.stdout
    app = make_app("paris", BGJOBS_MODE="disabled", BGJOBS_TIMEZONE="Europe/Paris")
    BGJobs(app, registry=registry)
    result = flask_cli_runner(app).invoke(args=["bgjobs", "check", "--mode", "trigger-dev"])
    assert result.exit_code == 0, result.stderr
    assert "cron 0 3 * * * (Europe/Paris), runs as '0 3 * * *'" in result.stdout


def test_flask_bgjobs_exec_runs_the_job_inside_the_app_context(
    make_app: Callable[..., Flask],
) -> None:
    recorder = Recorder(_context_probe)
    app = make_app("execapp", BGJOBS_MODE="disabled")
    BGJobs(app, registry=registry_with(("probe", recorder), ("boom", _boom)))
    runner = flask_cli_runner(app)

    result = runner.invoke(args=["bgjobs", "exec", "probe"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("probe: completed in ")
    assert recorder.values == ["execapp:yes"]

    failed = runner.invoke(args=["bgjobs", "exec", "boom"])
    assert failed.exit_code == 1
    assert failed.stdout.startswith("boom: failed after ")
    assert "RuntimeError: boom in execapp" in failed.stdout  # current_app worked in the job

    unknown = runner.invoke(args=["bgjobs", "exec", "nope"])
    assert unknown.exit_code == 2
    assert unknown.stderr == "bgjobs: error: no job 'nope' in execapp (its jobs: probe, boom)\n"


def _boom() -> None:
    raise RuntimeError(f"boom in {current_app.name}")


def test_flask_bgjobs_list_and_vercel_json_use_the_app_settings(
    make_app: Callable[..., Flask],
) -> None:
    registry = JobRegistry()
    registry.add_cron("report", "Report", noop, "0 9 * * *")
    paris = make_app("paris", BGJOBS_MODE="disabled", BGJOBS_TIMEZONE="Europe/Paris")
    BGJobs(paris, registry=registry)
    listed = flask_cli_runner(paris).invoke(args=["bgjobs", "list"])
    assert listed.exit_code == 0, listed.output
    assert "cron 0 9 * * * (Europe/Paris)" in listed.stdout

    hooks = make_app("hooks", BGJOBS_MODE="disabled", BGJOBS_URL_PREFIX="/hooks")
    BGJobs(hooks, registry=registry)
    crons = flask_cli_runner(hooks).invoke(args=["bgjobs", "vercel-json"])
    assert crons.exit_code == 0, crons.output
    assert json.loads(crons.stdout)["crons"] == [{"path": "/hooks/report", "schedule": "0 9 * * *"}]


def test_flask_bgjobs_run_schedules_the_jobs_once_in_the_app_context(
    make_app: Callable[..., Flask],
) -> None:
    recorder = Recorder(_context_probe)
    # No lock directory: without the CLI stopping them, the extension's own timers (it
    # autostarts) would run every job a second time in this process.
    app = make_app("runapp", BGJOBS_LOCK_DIR=None, BGJOBS_TIMEZONE="Europe/Paris")
    registry = registry_with(("probe", recorder), seconds=0.2)
    registry.add_cron("report", "Report", noop, "0 9 * * *")
    BGJobs(app, registry=registry)
    assert isinstance(get_manager(app), LocalJobManager)

    result = flask_cli_runner(app).invoke(args=["bgjobs", "run", "--duration", "1"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "bgjobs: running 2 jobs from runapp for 1.0s" in out
    assert "cron 0 9 * * * (Europe/Paris)" in out  # the manager got the app's settings
    runs = int(re.search(r"Metrics: (\d+) runs? ", out).group(1))  # type: ignore[union-attr]
    assert runs >= 2
    assert recorder.values == ["runapp:yes"] * runs  # every run in context, none twice
    assert {s.status for s in get_manager(app).get_all_job_statuses()} == {"stopped"}


def test_flask_bgjobs_without_a_registry_is_a_usage_error(make_app: Callable[..., Flask]) -> None:
    app = make_app("bare", BGJOBS_MODE="disabled")
    BGJobs(app)
    result = flask_cli_runner(app).invoke(args=["bgjobs", "list"])
    assert result.exit_code == 2
    assert "bgjobs: error: bare has the bgjobs extension but no JobRegistry" in result.stderr


def test_flask_bgjobs_on_an_app_without_the_extension_is_a_one_line_usage_error(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app("plain")
    result = flask_cli_runner(app).invoke(args=["bgjobs", "list"])
    assert result.exit_code == 2
    assert result.stderr == (
        "bgjobs: error: plain is a Flask app without the bgjobs extension; set it up with "
        "bgjobs.flask.BGJobs(app, registry=jobs), or give APP as the JobRegistry itself\n"
    )


def test_flask_bgjobs_comes_from_the_flask_commands_entry_point_not_app_cli(
    make_app: Callable[..., Flask],
) -> None:
    if sys.version_info >= (3, 10):
        from importlib.metadata import entry_points
    else:  # what Flask itself uses there
        from importlib_metadata import entry_points

    from bgjobs._cli.flask_commands import command_group

    (entry,) = [e for e in entry_points(group="flask.commands") if e.name == "bgjobs"]
    assert entry.load() is command_group
    app = make_app(BGJOBS_MODE="disabled")
    BGJobs(app, registry=registry_with(("job", noop)))
    assert "bgjobs" not in app.cli.commands  # importing bgjobs.flask loads no command line


def test_the_command_line_reads_the_extension_state_by_its_attributes(
    make_app: Callable[..., Flask],
) -> None:
    from bgjobs._cli.apps import EXTENSION_KEY, ExtensionState, from_flask_app

    assert EXTENSION_KEY == bgjobs.flask.EXTENSION_KEY
    app = make_app(BGJOBS_MODE="disabled")
    registry = registry_with(("job", noop))
    BGJobs(app, registry=registry)
    state = get_state(app)
    assert isinstance(state, ExtensionState)
    loaded = from_flask_app(app)
    assert (loaded.registry, loaded.manager, loaded.settings) == (
        registry,
        state.manager,
        state.settings,
    )
