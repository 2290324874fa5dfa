"""Trigger.dev environments (issue 14, item 5): the environment comes from the secret key,
every developer's development environment and every preview branch gets schedule keys of
its own, and the fake server scopes schedules per environment as the live one does."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest
from fake_triggerdev import FakeTriggerDev
from support_triggerdev import fast_client, make_manager

from bgjobs.config import get_trigger_dev_config
from bgjobs.errors import TriggerDevError
from bgjobs.triggerdev import TriggerDevJobManager
from bgjobs.types import TriggerDevConfig

PROD = "tr_prod_Pr0dK3y000000000000000"
STG = "tr_stg_St4gK3y000000000000000"
ALICE = "tr_dev_Al1c3K3y0000000000000000"
BOB = "tr_dev_B0bK3y000000000000000000"
PREVIEW = "tr_preview_Pr3v13wK3y00000000000"
TASK = "bgjobs-dispatch"


def noop() -> None:
    pass


@pytest.fixture
def fake() -> Iterator[FakeTriggerDev]:
    with FakeTriggerDev(api_key=PROD) as server:
        yield server


@pytest.fixture
def managers(fake: FakeTriggerDev) -> Iterator[Callable[..., TriggerDevJobManager]]:
    made: List[TriggerDevJobManager] = []

    def make(**kwargs: Any) -> TriggerDevJobManager:
        manager = make_manager(fake, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


# -- the environment comes from the key -------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "environment"),
    [(ALICE, "development"), (STG, "staging"), (PROD, "production"), ("custom-key", "development")],
)
def test_the_environment_is_the_keys_own(key: str, environment: str) -> None:
    config = get_trigger_dev_config({"TRIGGER_DEV_API_KEY": key})
    assert config.environment == environment
    assert config.is_fully_configured
    assert TriggerDevConfig(api_key=key).environment == environment


def test_an_explicit_environment_the_key_contradicts_is_refused_naming_both() -> None:
    config = get_trigger_dev_config(
        {"TRIGGER_DEV_API_KEY": PROD, "TRIGGER_DEV_ENVIRONMENT": "development"}
    )
    assert not config.is_fully_configured and config.is_partially_configured
    problem = config.problem or ""
    assert "TRIGGER_DEV_ENVIRONMENT='development'" in problem and "production" in problem
    assert PROD not in problem
    with pytest.raises(ValueError, match="does not match the API key"):
        TriggerDevJobManager(config, env={})
    # Agreeing, or a key without a known prefix (the setting decides), is fine.
    agreeing = {"TRIGGER_DEV_API_KEY": STG, "TRIGGER_DEV_ENVIRONMENT": "Staging"}
    assert get_trigger_dev_config(agreeing).is_fully_configured
    custom = {"TRIGGER_DEV_API_KEY": "custom", "TRIGGER_DEV_ENVIRONMENT": "staging"}
    assert get_trigger_dev_config(custom).environment == "staging"


def test_a_mismatched_config_is_refused_even_with_a_client_handed_in(
    fake: FakeTriggerDev,
) -> None:
    config = TriggerDevConfig(api_key=PROD, api_url=fake.url, environment="staging")
    with pytest.raises(ValueError, match="does not match"):
        TriggerDevJobManager(config, client=fast_client(fake), env={})


# -- development: one scope per developer ------------------------------------------------------


def test_each_developer_has_schedule_keys_of_their_own(
    fake: FakeTriggerDev, managers: Callable[..., TriggerDevJobManager]
) -> None:
    alice_env = fake.add_environment(ALICE, user_name="Alice")
    bob_env = fake.add_environment(BOB, user_name="Bob")
    alice, bob = managers(api_key=ALICE), managers(api_key=BOB)
    assert alice.config.environment == bob.config.environment == "development"
    assert alice.dedup_key("job") != bob.dedup_key("job")
    assert alice.dedup_key("job").startswith("bgjobs:development-")
    assert ALICE not in alice.dedup_key("job") and "Al1c3" not in alice.dedup_key("job")
    # Stable: the same key always gives the same scope.
    assert make_manager(fake, api_key=ALICE).dedup_key("job") == alice.dedup_key("job")

    for manager in (alice, bob):
        manager.schedule_job("job", "Job", noop, 300)
        assert manager.sync(timeout=5) == {"job": "created"}
    # Bob's sync neither failed nor moved Alice's schedule: one schedule each.
    owners = {s["deduplicationKey"]: s["environments"][0]["id"] for s in fake.schedules}
    assert owners == {alice.dedup_key("job"): alice_env.id, bob.dedup_key("job"): bob_env.id}
    alice.schedule_job("job", "Job", noop, 600)  # Alice changes her schedule again
    assert alice.sync(timeout=5) == {"job": "updated"}
    assert [s["deduplicationKey"] for s in bob.remote_schedules()] == [bob.dedup_key("job")]
    assert bob.prune() == []
    assert len(fake.schedules) == 2


def test_a_development_branch_has_its_own_scope(fake: FakeTriggerDev) -> None:
    config = get_trigger_dev_config({"TRIGGER_DEV_API_KEY": ALICE, "TRIGGER_DEV_BRANCH": "spike"})
    root = get_trigger_dev_config({"TRIGGER_DEV_API_KEY": ALICE, "TRIGGER_DEV_BRANCH": "default"})
    assert config.branch == "spike" and root.branch is None
    assert config.scope.startswith(root.scope) and config.scope.endswith("-spike")


# -- preview branches ---------------------------------------------------------------------------


def test_a_preview_key_needs_its_branch_and_sends_it(
    fake: FakeTriggerDev, managers: Callable[..., TriggerDevJobManager]
) -> None:
    without = get_trigger_dev_config({"TRIGGER_DEV_API_KEY": PREVIEW})
    assert without.environment == "preview" and not without.is_fully_configured
    assert "TRIGGER_PREVIEW_BRANCH" in (without.problem or "")
    vercel = get_trigger_dev_config(
        {"TRIGGER_DEV_API_KEY": PREVIEW, "VERCEL_GIT_COMMIT_REF": "feature/login"}
    )
    assert vercel.branch == "feature/login" and vercel.is_fully_configured

    login = fake.add_environment(PREVIEW, branch="feature/login")
    fake.add_environment(PREVIEW, branch="fix-typo")
    manager = managers(api_key=PREVIEW, branch="feature/login")
    other = managers(api_key=PREVIEW, branch="fix-typo")
    assert manager.dedup_key("job").startswith("bgjobs:preview-feature-login-")
    assert other.dedup_key("job") == "bgjobs:preview-fix-typo:job"
    for m in (manager, other):
        m.schedule_job("job", "Job", noop, 300)
        assert m.sync(timeout=5) == {"job": "created"}
    assert all(r.header("x-trigger-branch") for r in fake.requests)
    mine = fake.schedule(manager.dedup_key("job"))
    assert mine is not None and mine["environments"][0]["id"] == login.id
    assert len(fake.schedules) == 2


# -- the fake server scopes schedules per environment, as live ----------------------------------


def test_fake_hides_another_environments_schedule_and_lets_post_take_it_over(
    fake: FakeTriggerDev,
) -> None:
    fake.add_environment(STG)
    production, staging = fast_client(fake), fast_client(fake, api_key=STG)
    created = production.create_schedule(TASK, "0 * * * *", deduplication_key="shared")
    assert staging.retrieve_schedule("shared") is None  # 404 for another environment's
    assert staging.list_schedules() == []
    for call in (
        lambda: staging.update_schedule("shared", TASK, "5 * * * *"),
        lambda: staging.deactivate_schedule("shared"),
    ):
        with pytest.raises(TriggerDevError) as excinfo:
            call()
        assert excinfo.value.status == 404
    assert staging.delete_schedule("shared") is False
    # A POST with the same key moves the schedule to staging: production loses it.
    moved = staging.create_schedule(TASK, "5 * * * *", deduplication_key="shared")
    assert moved["id"] == created["id"]
    assert production.retrieve_schedule("shared") is None
    assert [s["id"] for s in staging.list_schedules()] == [created["id"]]


def test_fake_refuses_a_preview_key_without_a_known_branch(fake: FakeTriggerDev) -> None:
    fake.add_environment(PREVIEW, branch="known")
    for branch in (None, "unknown"):
        with pytest.raises(TriggerDevError) as excinfo:
            fast_client(fake, api_key=PREVIEW, branch=branch).list_schedules()
        assert excinfo.value.status == 401
    assert fast_client(fake, api_key=PREVIEW, branch="known").list_schedules() == []


def test_the_plan_limit_counts_staging_and_production_not_development(
    fake: FakeTriggerDev, managers: Callable[..., TriggerDevJobManager]
) -> None:
    fake.schedule_limit = 2
    fake.add_environment(STG)
    fake.add_environment(ALICE)
    alice, staging, production = (
        managers(api_key=ALICE),
        managers(api_key=STG),
        managers(api_key=PROD),
    )
    for n in range(3):  # development schedules do not count
        alice.schedule_job(f"dev-{n}", "Dev", noop, 300)
    assert set(alice.sync(timeout=5).values()) == {"created"}
    staging.schedule_job("job", "Job", noop, 300)
    assert staging.sync(timeout=5) == {"job": "created"}
    production.schedule_job("job", "Job", noop, 300)
    assert production.sync(timeout=5) == {"job": "created"}
    production.schedule_job("second", "Second", noop, 300)
    with pytest.raises(TriggerDevError) as excinfo:
        production.sync(timeout=5)
    assert "plan's schedule limit (2/2 schedules" in str(excinfo.value)
