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
