"""The job registry, the factory, the process-wide singleton and the package's imports."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any, Dict, List, Optional

import pytest

import bgjobs
import bgjobs.factory as factory
from bgjobs import (
    InvalidScheduleError,
    JobRegistry,
    LocalJobManager,
    NoOpJobManager,
    VercelJobManager,
    create_job_manager,
    get_job_manager,
    initialize_background_jobs,
    reset_job_manager,
)
from bgjobs.types import BackgroundJobManager

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOUR = 3600.0


def noop() -> None:
    pass


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


# --- imports ----------------------------------------------------------------------------------


def test_import_bgjobs_imports_neither_requests_nor_croniter() -> None:
    result = run_python(
        "import sys, bgjobs\n"
        "print(sorted(m for m in ('requests', 'croniter') if m in sys.modules))\n"
        "from bgjobs import LocalJobManager, JobRegistry, JobStatus\n"
        "print(LocalJobManager.__name__, JobRegistry.__name__, JobStatus.__name__)\n"
        "print(sorted(m for m in ('requests',) if m in sys.modules))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "LocalJobManager JobRegistry JobStatus", "[]"]


def test_every_public_name_is_importable_and_listed() -> None:
    for name in bgjobs.__all__:
        if name == "TriggerDevJobManager":
            continue  # importing it is fine; it is covered by the trigger-dev tests
        assert getattr(bgjobs, name) is not None
    assert set(bgjobs.__all__) <= set(dir(bgjobs))
    with pytest.raises(AttributeError):
        bgjobs.no_such_name  # noqa: B018


# --- registry -----------------------------------------------------------------------------------


def test_decorators_declare_jobs_in_order_and_return_the_function() -> None:
    jobs = JobRegistry()

    @jobs.interval("repository-sync", "Repository Synchronization", minutes=5)
    def sync_repository() -> None: ...

    @jobs.cron("renewal-reminder", "Subscription Renewal Reminder", "0 9 * * *")
    def send_renewal_reminders() -> None: ...

    @jobs.cron("paris-report", "Paris report", "30 2 * * *", timezone="Europe/Paris")
    def report() -> None: ...

    @jobs.interval("mixed", "Mixed units", hours=1, minutes=30, seconds=15)
    def mixed() -> None: ...

    assert callable(sync_repository) and sync_repository.__name__ == "sync_repository"
    assert [d.id for d in jobs] == ["repository-sync", "renewal-reminder", "paris-report", "mixed"]
    assert len(jobs) == 4 and "mixed" in jobs and "other" not in jobs
    sync = jobs.get("repository-sync")
    assert sync is not None and sync.interval == 300 and sync.cron is None
    assert sync.func is sync_repository and sync.name == "Repository Synchronization"
    reminder = jobs.get("renewal-reminder")
    assert reminder is not None and reminder.cron == "0 9 * * *" and reminder.interval is None
    paris = jobs.get("paris-report")
    assert paris is not None and paris.timezone == "Europe/Paris"
    assert jobs.get("mixed").interval == 3600 + 1800 + 15  # type: ignore[union-attr]
    assert jobs.get("nope") is None


def test_interval_accepts_every_timedelta() -> None:
    jobs = JobRegistry()

    @jobs.interval("sync", "Sync", every=timedelta(minutes=5))
    def sync() -> None: ...

    assert jobs.get("sync").interval == 300  # type: ignore[union-attr]


def test_interval_refuses_every_together_with_units() -> None:
    jobs = JobRegistry()
    with pytest.raises(TypeError, match="'sync'"):
        jobs.interval("sync", "Sync", every=timedelta(minutes=5), seconds=10)
    assert len(jobs) == 0


def test_duplicate_job_id_is_an_error() -> None:
    jobs = JobRegistry()
    jobs.add_interval("dup", "First", noop, 10)
    with pytest.raises(ValueError, match="'dup'"):

        @jobs.cron("dup", "Second", "@daily")
        def second() -> None: ...

    assert [d.name for d in jobs] == ["First"]


@pytest.mark.parametrize(
    ("declare", "error"),
    [
        pytest.param(
            lambda j: j.interval("z", "Zero")(noop),
            InvalidScheduleError,
            id="interval-without-units",
        ),
        pytest.param(
            lambda j: j.interval("neg", "Neg", seconds=-5)(noop),
            InvalidScheduleError,
            id="negative-interval",
        ),
        pytest.param(
            lambda j: j.cron("c", "Bad cron", "61 * * * *")(noop),
            InvalidScheduleError,
            id="bad-cron",
        ),
        pytest.param(
            lambda j: j.cron("c", "Never", "0 0 30 2 *")(noop),
            InvalidScheduleError,
            id="cron-never-fires",
        ),
        pytest.param(
            lambda j: j.cron("c", "Bad tz", "@daily", timezone="Nope/Nope")(noop),
            InvalidScheduleError,
            id="unknown-timezone",
        ),
        pytest.param(lambda j: j.interval("", "Empty", seconds=5)(noop), ValueError, id="empty-id"),
        pytest.param(
            lambda j: j.add_interval("x", "Not callable", 42, 5), TypeError, id="not-callable"
        ),
    ],
)
def test_bad_declarations_fail_at_declaration_time(declare: Any, error: type) -> None:
    jobs = JobRegistry()
    with pytest.raises(error):
        declare(jobs)
    assert len(jobs) == 0


def test_apply_schedules_every_job_on_a_manager(manager: LocalJobManager) -> None:
    jobs = JobRegistry()
    jobs.add_interval("a", "A", noop, timedelta(hours=1))
    jobs.add_cron("b", "B", noop, "0 9 * * *", timezone="Europe/Paris")
    jobs.apply(manager)
    statuses = manager.get_all_job_statuses()
    assert [(s.id, s.schedule) for s in statuses] == [
        ("a", "every 1h"),
        ("b", "cron 0 9 * * * (Europe/Paris)"),
    ]


def test_cron_without_timezone_uses_the_managers_default() -> None:
    jobs = JobRegistry()
    jobs.add_cron("b", "B", noop, "0 9 * * *")
    m = LocalJobManager(env={"BGJOBS_TIMEZONE": "Europe/Paris"})
    try:
        jobs.apply(m)
        assert m.get_job_status("b").schedule == "cron 0 9 * * * (Europe/Paris)"  # type: ignore[union-attr]
    finally:
        m.stop_all_jobs()


class CountingManager(NoOpJobManager):
    """Records schedule calls; can fail the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__()
        self.calls: List[str] = []
        self._fail_first = fail_first
        self._lock = threading.Lock()

    def schedule_job(self, id: str, name: str, job: Any, interval: Any) -> None:
        self._record(id)

    def schedule_cron_job(
        self, id: str, name: str, job: Any, cron_expression: str, *, timezone: Any = None
    ) -> None:
        self._record(id)

    def _record(self, id: str) -> None:
        with self._lock:
            if self._fail_first > 0:
                self._fail_first -= 1
                raise RuntimeError("backend unavailable")
            self.calls.append(id)
        time.sleep(0.001)  # widen the window in which racing initialisers could overlap


def three_job_registry() -> JobRegistry:
    jobs = JobRegistry()
    jobs.add_interval("a", "A", noop, 60)
    jobs.add_cron("b", "B", noop, "@hourly")
    jobs.add_interval("c", "C", noop, 120)
    return jobs


def test_initialize_background_jobs_registers_once_when_ten_threads_race() -> None:
    jobs, target = three_job_registry(), CountingManager()
    barrier = threading.Barrier(10)
    results: List[BackgroundJobManager] = []
    errors: List[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(5)
            results.append(initialize_background_jobs(jobs, target))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len(results) == 10 and all(r is target for r in results)
    assert target.calls == ["a", "b", "c"]
    initialize_background_jobs(jobs, target)
    assert target.calls == ["a", "b", "c"]


def test_initialize_background_jobs_can_be_retried_after_a_failure() -> None:
    jobs, target = three_job_registry(), CountingManager(fail_first=1)
    with pytest.raises(RuntimeError, match="backend unavailable"):
        initialize_background_jobs(jobs, target)
    assert target.calls == []
    assert initialize_background_jobs(jobs, target) is target
    assert target.calls == ["a", "b", "c"]
    initialize_background_jobs(jobs, target)  # done now: idempotent
    assert target.calls == ["a", "b", "c"]


def test_initialize_background_jobs_retry_after_a_partial_failure_schedules_all() -> None:
    jobs = three_job_registry()
    m = LocalJobManager(env={})
    original = m.schedule_cron_job
    failures = [1]

    def flaky_cron(*args: Any, **kwargs: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("first attempt fails after 'a' was scheduled")
        original(*args, **kwargs)

    m.schedule_cron_job = flaky_cron  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError):
            initialize_background_jobs(jobs, m)
        assert [s.id for s in m.get_all_job_statuses()] == ["a"]
        initialize_background_jobs(jobs, m)
        assert [s.id for s in m.get_all_job_statuses()] == ["a", "b", "c"]
        assert {s.status for s in m.get_all_job_statuses()} == {"scheduled"}
    finally:
        m.stop_all_jobs()


def test_initialize_background_jobs_defaults_to_the_singleton(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created: List[BackgroundJobManager] = []

    def create(env: Optional[Dict[str, str]] = None) -> BackgroundJobManager:
        created.append(LocalJobManager(env={}))
        return created[-1]

    monkeypatch.setattr(factory, "create_job_manager", create)
    returned = initialize_background_jobs(three_job_registry())
    assert created == [returned] and get_job_manager() is returned
    assert [s.id for s in returned.get_all_job_statuses()] == ["a", "b", "c"]


# --- factory -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        pytest.param({}, LocalJobManager, id="local-by-default"),
        pytest.param({"BGJOBS_MODE": "local"}, LocalJobManager, id="forced-local"),
        pytest.param({"BGJOBS_MODE": "disabled"}, NoOpJobManager, id="forced-disabled"),
        pytest.param({"DISABLE_AUTO_SYNC": "1"}, NoOpJobManager, id="disable-auto-sync"),
        pytest.param({"VERCEL": "1"}, VercelJobManager, id="vercel"),
        pytest.param({"BGJOBS_MODE": "vercel"}, VercelJobManager, id="forced-vercel"),
        pytest.param(
            {"TRIGGER_DEV_ENABLED": "1", "BGJOBS_ENV": "production"},
            LocalJobManager,
            id="partial-trigger-dev-is-local",
        ),
    ],
)
def test_factory_builds_the_manager_for_the_mode(env: Dict[str, str], kind: type) -> None:
    m = create_job_manager(env)
    try:
        assert type(m) is kind
    finally:
        m.stop_all_jobs()


def test_factory_local_manager_reads_its_settings_from_the_given_env() -> None:
    m = create_job_manager({"BGJOBS_TIMEZONE": "Europe/Paris"})
    try:
        m.schedule_cron_job("r", "R", noop, "0 9 * * *")
        assert "Europe/Paris" in m.get_job_status("r").schedule  # type: ignore[union-attr]
    finally:
        m.stop_all_jobs()


def test_factory_logs_the_mode_and_warns_about_partial_trigger_dev(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="bgjobs"):
        create_job_manager(
            {"TRIGGER_DEV_API_URL": "https://t.example", "TRIGGER_DEV_API_KEY": ""}
        ).stop_all_jobs()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "partially configured" in warnings[0].getMessage()
    assert sum("local" in message for message in infos) == 1


def test_factory_never_logs_the_trigger_dev_key(caplog: pytest.LogCaptureFixture) -> None:
    key = "tr_dev_never_log_me"
    with caplog.at_level(logging.DEBUG, logger="bgjobs"):
        create_job_manager({"TRIGGER_DEV_API_KEY": key, "TRIGGER_DEV_API_URL": "nope"})
    assert caplog.records and key not in caplog.text


def test_factory_unknown_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="sometimes"):
        create_job_manager({"BGJOBS_MODE": "sometimes"})


def test_factory_builds_the_trigger_dev_manager_once_it_exists() -> None:
    env = {
        "TRIGGER_DEV_ENABLED": "1",
        "TRIGGER_DEV_API_KEY": "tr_dev_x",
        "BGJOBS_ENV": "production",
    }
    try:
        m = create_job_manager(env)
    except NotImplementedError:
        return  # the placeholder of the first milestone
    try:
        from bgjobs.triggerdev import TriggerDevJobManager

        assert isinstance(m, TriggerDevJobManager)
    finally:
        m.stop_all_jobs()


def test_get_job_manager_creates_exactly_one_manager_for_50_racing_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: List[BackgroundJobManager] = []
    calls_lock = threading.Lock()

    def slow_create(env: Optional[Dict[str, str]] = None) -> BackgroundJobManager:
        time.sleep(0.05)  # a slow construction makes a racing second creation likely
        made = NoOpJobManager()
        with calls_lock:
            calls.append(made)
        return made

    monkeypatch.setattr(factory, "create_job_manager", slow_create)
    barrier = threading.Barrier(50)
    results: List[BackgroundJobManager] = []
    results_lock = threading.Lock()

    def worker() -> None:
        barrier.wait(10)
        got = get_job_manager()
        with results_lock:
            results.append(got)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert len(results) == 50
    assert all(r is calls[0] for r in results)
    assert get_job_manager() is calls[0]


def test_reset_job_manager_stops_jobs_and_a_new_manager_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(factory, "create_job_manager", lambda env=None: LocalJobManager(env={}))
    first = get_job_manager()
    first.schedule_job("beat", "Heartbeat", noop, HOUR)
    reset_job_manager()
    status = first.get_job_status("beat")
    assert status is not None and status.status == "stopped" and status.next_run is None
    second = get_job_manager()
    assert second is not first
    assert second.get_all_job_statuses() == []
    reset_job_manager()
    reset_job_manager()  # nothing to reset: a no-op


def test_get_job_manager_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    reset_job_manager()
    monkeypatch.setenv("BGJOBS_MODE", "disabled")
    assert isinstance(get_job_manager(), NoOpJobManager)
