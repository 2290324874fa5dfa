"""One settings object and one lifecycle: every manager reads Settings, closes, and is a
context manager."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Set

import pytest
from fake_triggerdev import FakeTriggerDev
from support_triggerdev import SECRET, make_manager

from bgjobs import (
    BackgroundJobManager,
    LocalJobManager,
    NoOpJobManager,
    VercelJobManager,
    create_job_manager,
    get_job_manager,
    reset_job_manager,
)
from bgjobs.config import Settings
from bgjobs.execution import BaseJobManager

PACKAGE = Path(__file__).resolve().parent.parent / "bgjobs"

EVERY_KEY = {
    "BGJOBS_MODE": "local",
    "BGJOBS_ENV": "Production",
    "DISABLE_AUTO_SYNC": "no",
    "VERCEL": "1",
    "BGJOBS_TIMEZONE": " Europe/Paris ",
    "BGJOBS_LOCK_DIR": "/run/myapp/bgjobs",
    "BGJOBS_MAX_WORKERS": "4",
    "BGJOBS_SHUTDOWN_TIMEOUT": "2.5",
    "CRON_SECRET": "vercel-secret",
    "BGJOBS_URL_PREFIX": "internal/cron/",
    "BGJOBS_AUTOSTART": "off",
    "TRIGGER_DEV_ENABLED": "yes",
    "TRIGGER_SECRET_KEY": SECRET,
    "TRIGGER_API_URL": "https://trigger.example.com/",
    "TRIGGER_DEV_ENVIRONMENT": "STAGING",
    "TRIGGER_DEV_TASK_ID": "my-dispatch",
}


# -- Settings -------------------------------------------------------------------------------


def test_settings_read_every_key_once() -> None:
    settings = Settings.from_env(EVERY_KEY)
    assert settings.mode == "local"
    assert settings.app_environment == "production"
    assert settings.vercel and not settings.disable_auto_sync
    assert settings.timezone == "Europe/Paris"
    assert settings.lock_dir == settings.state_dir == "/run/myapp/bgjobs"
    assert settings.max_workers == 4 and settings.shutdown_timeout == 2.5
    assert settings.secret == "vercel-secret"  # CRON_SECRET when BGJOBS_SECRET is unset
    assert settings.url_prefix == "/internal/cron"
    assert settings.autostart is False
    assert settings.trigger_dev.enabled and settings.trigger_dev.api_key == SECRET
    assert settings.trigger_dev.api_url == "https://trigger.example.com"
    assert settings.trigger_dev.environment == "staging"
    assert settings.task_id == "my-dispatch"


def test_settings_defaults_from_an_empty_mapping() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.mode == "local" and settings.url_prefix == "/api/cron"
    assert settings.max_workers == 10 and settings.shutdown_timeout == 10.0
    assert settings.secret is None and settings.lock_dir is None and settings.timezone is None


def test_blank_values_count_as_unset_everywhere() -> None:
    blank = {key: "   " for key in EVERY_KEY if key != "BGJOBS_LOCK_DIR"}
    assert Settings.from_env(blank) == Settings()
    # The state directory is the exception: set but empty means off, not unset.
    assert Settings.from_env({"BGJOBS_STATE_DIR": " "}).state_dir == ""
    assert Settings.from_env({"BGJOBS_LOCK_DIR": ""}).lock_dir is None
    assert Settings.from_env({"BGJOBS_SECRET": " ", "CRON_SECRET": "s"}).secret == "s"


def test_secrets_stay_out_of_the_repr() -> None:
    text = repr(Settings.from_env({**EVERY_KEY, "BGJOBS_SECRET": "hunter2-hunter2"}))
    assert "hunter2" not in text and "vercel-secret" not in text and SECRET not in text


def test_a_bad_mode_fails_only_when_the_mode_is_asked_for() -> None:
    settings = Settings.from_env({"BGJOBS_MODE": "cloud"})
    with pytest.raises(ValueError, match="BGJOBS_MODE='cloud'"):
        _ = settings.mode


@pytest.mark.parametrize(
    ("key", "value"), [("BGJOBS_MAX_WORKERS", "0"), ("BGJOBS_SHUTDOWN_TIMEOUT", "soon")]
)
def test_a_bad_number_names_its_key(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        Settings.from_env({key: value})


def test_replace_changes_a_copy() -> None:
    settings = Settings.from_env({"BGJOBS_LOCK_DIR": "/a"})
    assert settings.state_dir == "/a" and settings.replace(state_dir="").lock_dir is None
    assert settings.lock_dir == "/a"


def test_the_factory_hands_one_settings_object_to_the_manager() -> None:
    settings = Settings.from_env({"BGJOBS_TIMEZONE": "Asia/Kolkata", "BGJOBS_MAX_WORKERS": "3"})
    with create_job_manager(settings=settings) as manager:
        assert isinstance(manager, LocalJobManager)
        # The same settings, with the app's default state directory filled in.
        assert manager.settings == settings.with_default_state_dir()
        assert manager.settings.state_dir and manager.settings.max_workers == 3
        manager.schedule_cron_job("r", "R", lambda: None, "0 9 * * *")
        status = manager.get_job_status("r")
        assert status is not None and "Asia/Kolkata" in status.schedule


def test_only_the_config_module_reads_the_environment() -> None:
    """Settings are read in one place; a module reading os.environ itself would disagree
    with app.config or an explicit mapping. The console reads the terminal's TERM and
    NO_COLOR, and the Flask extension merges app.config over the environment."""
    allowed = {"config.py", "console.py", "flask.py"}
    offenders: List[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


# -- close() and context managers ----------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeTriggerDev]:
    with FakeTriggerDev(api_key=SECRET) as server:
        yield server


def _makers(fake: FakeTriggerDev) -> List[Callable[[], BackgroundJobManager]]:
    return [
        lambda: LocalJobManager(env={}),
        lambda: VercelJobManager(env={}),
        lambda: make_manager(fake),
    ]


@pytest.mark.parametrize("which", ["local", "vercel", "trigger-dev"])
def test_every_runtime_closes_idempotently_as_a_context_manager(
    which: str, fake: FakeTriggerDev
) -> None:
    make = dict(zip(["local", "vercel", "trigger-dev"], _makers(fake)))[which]
    with make() as manager:
        manager.schedule_cron_job("daily", "Daily", lambda: None, "0 9 * * *")
        assert manager.get_job_status("daily") is not None
    assert isinstance(manager, BaseJobManager) and manager.closed
    status = manager.get_job_status("daily")
    assert status is not None and status.status == "stopped" and status.next_run is None
    manager.close()  # idempotent
    with pytest.raises(RuntimeError, match=r"'again'.*shut down"):
        manager.schedule_job("again", "Again", lambda: None, 60)
    assert manager.trigger_job("daily") is True  # a manual run still works


def test_the_noop_manager_is_a_context_manager_too() -> None:
    with NoOpJobManager() as manager:
        manager.schedule_job("x", "X", lambda: None, 1)
    manager.close()
    assert manager.get_all_job_statuses() == []


def _bgjobs_threads() -> Set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("bgjobs")}


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_closing_the_local_runtime_releases_its_threads() -> None:
    before = _bgjobs_threads()
    ran = threading.Event()
    with LocalJobManager(env={}) as manager:
        manager.schedule_job("tick", "Tick", ran.set, 0.01)
        assert ran.wait(10)
        assert _bgjobs_threads() - before  # a waiting thread and a worker exist
    # Not after the pool's idle timeout (30 s): at once.
    assert _wait_until(lambda: not _bgjobs_threads() - before, 5), _bgjobs_threads() - before


def test_close_waits_for_a_running_job_and_reports_one_that_overruns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)

    manager = LocalJobManager(env={"BGJOBS_SHUTDOWN_TIMEOUT": "0.05"})
    manager.schedule_job("slow", "Slow", slow, 0.01)
    assert started.wait(10)
    assert manager.shutdown() is False  # the 0.05 s setting passed; the job still runs
    assert "'slow'" in caplog.text and "still running" in caplog.text
    release.set()
    assert manager.shutdown(timeout=10) is True
    manager.close()


def test_reset_job_manager_closes_the_singleton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGJOBS_MODE", "local")
    manager = get_job_manager()
    assert isinstance(manager, LocalJobManager)
    manager.schedule_job("tick", "Tick", lambda: None, 3600)
    reset_job_manager()
    assert manager.closed
    assert get_job_manager() is not manager


def test_close_races_with_many_threads_scheduling() -> None:
    """Every schedule call either lands before close (and is stopped by it) or is refused;
    none is left armed afterwards."""
    manager = LocalJobManager(env={})
    errors: List[BaseException] = []
    go = threading.Barrier(21)

    def scheduler(n: int) -> None:
        go.wait()
        for i in range(50):
            try:
                manager.schedule_job(f"job-{n}-{i}", "Job", lambda: None, 0.5)
            except RuntimeError:
                return
            except BaseException as exc:  # pragma: no cover - the failure being tested
                errors.append(exc)
                return

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    go.wait()
    assert _wait_until(lambda: len(manager.get_all_job_statuses()) >= 100)
    manager.close()
    for thread in threads:
        thread.join(10)
    assert errors == []
    statuses = manager.get_all_job_statuses()
    assert statuses and all(s.status == "stopped" and s.next_run is None for s in statuses)
