"""Policies declared in a registry, and the runtimes that cannot honour some of them."""

from __future__ import annotations

import re

import pytest

from bgjobs import InvalidScheduleError, JobRegistry, LocalJobManager, VercelJobManager
from bgjobs.policies import JobPolicy


def test_registry_decorators_take_the_policy_keywords(manager: LocalJobManager) -> None:
    jobs = JobRegistry()

    @jobs.interval("sync", "Sync", minutes=5, timeout=60, retries=2, retry_backoff=5, jitter=10)
    def sync() -> None: ...

    @jobs.cron("report", "Report", "0 9 * * *", misfire_grace=3600)
    def report() -> None: ...

    @jobs.interval("plain", "Plain", minutes=1)
    def plain() -> None: ...

    definition = jobs.get("sync")
    assert definition is not None
    assert definition.policy == JobPolicy(timeout=60, retries=2, retry_backoff=5, jitter=10)
    assert jobs.get("plain").policy is None  # type: ignore[union-attr]
    jobs.apply(manager)
    assert manager._job("sync").policy == definition.policy  # type: ignore[union-attr]
    assert manager._job("report").policy == JobPolicy(misfire_grace=3600)  # type: ignore[union-attr]
    assert manager._job("plain").policy is None  # type: ignore[union-attr]
    for d in jobs:  # the registry's own installer keeps them as well
        manager.add_job(d)
    assert manager._job("sync").policy == definition.policy  # type: ignore[union-attr]


def test_a_bad_policy_in_a_decorator_fails_at_declaration() -> None:
    jobs = JobRegistry()
    with pytest.raises(InvalidScheduleError, match="job 'x': timeout must be"):
        jobs.interval("x", "X", minutes=5, timeout=-1)
    assert "x" not in jobs


@pytest.mark.parametrize(
    ("keywords", "named"),
    [
        ({"jitter": 30}, "jitter=30.0"),
        ({"misfire_grace": 60}, "misfire_grace=60.0"),
        ({"retries": 2}, "retries=2"),
    ],
)
def test_vercel_refuses_what_vercel_cron_cannot_do(keywords: dict, named: str) -> None:  # type: ignore[type-arg]
    manager = VercelJobManager(env={})
    with pytest.raises(
        InvalidScheduleError, match=re.escape(f"job 'j': Vercel Cron cannot honour {named}")
    ):
        manager.schedule_cron_job("j", "J", lambda: None, "0 * * * *", **keywords)
    jobs = JobRegistry()
    jobs.cron("r", "R", "0 * * * *", **keywords)(lambda: None)
    with pytest.raises(InvalidScheduleError, match="job 'r': Vercel Cron cannot honour"):
        manager.add_job(jobs.get("r"))  # type: ignore[arg-type]


def test_vercel_honours_timeouts() -> None:
    manager = VercelJobManager(env={})
    manager.schedule_cron_job("j", "J", lambda: None, "0 * * * *", timeout=30)
    assert manager._job("j").policy == JobPolicy(timeout=30)  # type: ignore[union-attr]


def test_a_dispatch_answer_tells_trigger_dev_the_jobs_retries(manager: LocalJobManager) -> None:
    from support_web import bearer, web_client

    def broken() -> None:
        raise RuntimeError("down")

    manager.schedule_job("flaky", "Flaky", broken, 3600, retries=2)
    manager.schedule_job("plain", "Plain", broken, 3600)
    client = web_client(manager, "secret-for-tests")
    answer = client.open("/api/cron/flaky", method="POST", headers=bearer("secret-for-tests"))
    assert answer.status_code == 200 and answer.headers["X-BGJobs-Retries"] == "2"
    answer = client.open("/api/cron/plain", method="POST", headers=bearer("secret-for-tests"))
    assert answer.status_code == 200 and "X-BGJobs-Retries" not in answer.headers
    # The dispatch itself runs once: Trigger.dev's task does the retrying.
    assert [r.attempt for r in manager.get_job_runs("flaky")] == [1]


def test_the_trigger_dev_dispatcher_stops_retrying_after_the_jobs_retries() -> None:
    """The TypeScript task reads X-BGJobs-Retries and aborts from attempt retries + 1 on."""
    from pathlib import Path

    source = (
        Path(__file__).parent.parent / "integrations/trigger.dev/src/trigger/bgjobs-dispatch.ts"
    ).read_text()
    assert 'response.headers.get("x-bgjobs-retries")' in source
    assert "finishRun(jobId, final, context.attempt, retries)" in source
    assert "attempt > retries" in source


def test_trigger_dev_refuses_jitter_misfire_grace_and_one_offs() -> None:
    from fake_triggerdev import FakeTriggerDev
    from support_triggerdev import make_manager

    with FakeTriggerDev() as fake:
        manager = make_manager(fake)
        try:
            with pytest.raises(
                InvalidScheduleError, match=r"job 'j': Trigger.dev schedules cannot honour jitter"
            ):
                manager.schedule_cron_job("j", "J", lambda: None, "0 * * * *", jitter=30)
            with pytest.raises(InvalidScheduleError, match=r"cannot honour misfire_grace=60\.0"):
                manager.schedule_cron_job("j", "J", lambda: None, "0 * * * *", misfire_grace=60)
            with pytest.raises(InvalidScheduleError, match="one-off job"):
                manager.schedule_once("j", "J", lambda: None, delay=60)
            manager.schedule_cron_job("k", "K", lambda: None, "0 * * * *", retries=3, timeout=60)
            assert manager.policy_of("k") == JobPolicy(retries=3, timeout=60)
        finally:
            manager.close()


def test_an_async_dispatch_answer_carries_the_retries_too(manager: LocalJobManager) -> None:
    from support_web import bearer, web_client

    manager.schedule_job("flaky", "Flaky", lambda: None, 3600, retries=4)
    client = web_client(manager, "secret-for-tests")
    headers = {**bearer("secret-for-tests"), "Prefer": "respond-async", "Idempotency-Key": "k1"}
    answer = client.open("/api/cron/flaky", method="POST", headers=headers)
    assert answer.status_code == 202 and answer.headers["X-BGJobs-Retries"] == "4"
    assert manager.wait_idle(5)
    again = client.open("/api/cron/flaky", method="POST", headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["X-BGJobs-Retries"] == "4"


def test_vercel_json_refuses_a_registry_job_with_retries() -> None:
    from bgjobs.vercel import vercel_crons

    jobs = JobRegistry()
    jobs.cron("ok", "OK", "0 * * * *", timeout=30)(lambda: None)
    assert [c["path"] for c in vercel_crons(jobs)] == ["/api/cron/ok"]
    jobs.cron("r", "R", "0 9 * * *", retries=2)(lambda: None)
    with pytest.raises(InvalidScheduleError, match="job 'r': Vercel Cron cannot honour retries=2"):
        vercel_crons(jobs)
