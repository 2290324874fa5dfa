"""Rolling deploys (issue 14, item 6): start-up registration is opt-out, a registry that
is already registered costs one request per process, and an older registry never puts its
schedules back over a newer one's (the registry stamp on Trigger.dev)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List
from urllib.parse import quote

import pytest
from fake_triggerdev import FakeTriggerDev
from support_triggerdev import make_manager, wait_until

from bgjobs._trigger_stamp import marker_key
from bgjobs.triggerdev import TriggerDevJobManager

STAMP_ON = {"TRIGGER_DEV_REGISTRY_STAMP": "1"}


def noop() -> None:
    pass


@pytest.fixture
def fake() -> Iterator[FakeTriggerDev]:
    with FakeTriggerDev() as server:
        yield server


@pytest.fixture
def made() -> Iterator[List[TriggerDevJobManager]]:
    managers: List[TriggerDevJobManager] = []
    yield managers
    for manager in managers:
        manager.close()


def process(fake: FakeTriggerDev, made: List[TriggerDevJobManager], **env: str) -> Any:
    """A new app process of one deploy: a fresh manager with the stamp on."""
    manager = make_manager(fake, env={**STAMP_ON, **env})
    made.append(manager)
    return manager


def idle(manager: TriggerDevJobManager) -> bool:
    return not manager._queue and manager._in_flight is None and manager._worker is None


def cron_of(fake: FakeTriggerDev, job_id: str) -> str:
    schedule = fake.schedule(f"bgjobs:production:{job_id}")
    assert schedule is not None
    return str(schedule["generator"]["expression"])


def test_start_up_registration_can_be_turned_off(
    fake: FakeTriggerDev, made: List[TriggerDevJobManager]
) -> None:
    manager = process(fake, made, TRIGGER_DEV_REGISTER_ON_START="0")
    manager.schedule_job("job", "Job", noop, 300)
    manager.schedule_job("job", "Job", noop, 600)  # rescheduled: still nothing sent
    assert manager._worker is None and fake.requests == []
    assert manager.sync(timeout=5) == {"job": "created"}  # the deploy step registers
    assert cron_of(fake, "job") == "*/10 * * * *"


def test_an_older_registry_never_puts_its_schedule_back(
    fake: FakeTriggerDev, made: List[TriggerDevJobManager]
) -> None:
    # Deploy 1 registers */5, deploy 2 (its deploy step) */10.
    old = process(fake, made)
    old.schedule_job("job", "Job", noop, 300)
    assert old.sync(timeout=5) == {"job": "created"}
    new = process(fake, made)
    new.schedule_job("job", "Job", noop, 600)
    assert new.sync(timeout=5) == {"job": "updated"}
    assert cron_of(fake, "job") == "*/10 * * * *"

    # An old replica (re)starts during the rolling deploy: it registers in the background
    # at start-up, finds its schedule older than the stamped one, and sends nothing.
    fake.clear_requests()
    replica = process(fake, made)
    replica.schedule_job("job", "Job", noop, 300)
    wait_until(lambda: idle(replica))
    assert fake.writes() == []
    assert cron_of(fake, "job") == "*/10 * * * *"
    status = replica.get_job_status("job")
    assert status is not None and "newer registry" in (status.last_sync_error or "")

    # Going back on purpose is the deploy step's job: sync() registers (and stamps) it.
    assert replica.sync(timeout=5) == {"job": "updated"}
    assert cron_of(fake, "job") == "*/5 * * * *"
    again = process(fake, made)
    again.schedule_job("job", "Job", noop, 600)  # now */10 is the older one
    wait_until(lambda: idle(again))
    assert cron_of(fake, "job") == "*/5 * * * *"


def test_processes_of_a_registered_deploy_make_one_request_each(
    fake: FakeTriggerDev, made: List[TriggerDevJobManager]
) -> None:
    first = process(fake, made)
    for n in range(3):
        first.schedule_job(f"job-{n}", "Job", noop, 300 * (n + 1))
    wait_until(lambda: idle(first))
    assert {s.get("externalId") for s in first.remote_schedules()} == {"job-0", "job-1", "job-2"}
    fake.clear_requests()
    for _ in range(4):  # e.g. the other workers of the host, booting
        manager = process(fake, made)
        for n in range(3):
            manager.schedule_job(f"job-{n}", "Job", noop, 300 * (n + 1))
        wait_until(lambda m=manager: idle(m))
        status = manager.get_job_status("job-0")
        assert status is not None and status.next_run is not None
        assert status.last_sync_error is None
    # Each process read the stamp once and sent nothing else: 4 requests, not 4 x 3 x 2.
    assert [(r.method, r.segments[-1]) for r in fake.requests] == [
        ("GET", marker_key("production"))
    ] * 4


def test_the_stamp_never_fires_counts_or_gets_pruned(
    fake: FakeTriggerDev, made: List[TriggerDevJobManager]
) -> None:
    fake.schedule_limit = 2
    manager = process(fake, made)
    manager.schedule_job("a", "A", noop, 300)
    manager.schedule_job("b", "B", noop, 600)  # the plan's limit (2) is reached by a and b
    assert manager.sync(timeout=5) == {"a": "created", "b": "created"}
    marker = fake.schedule(marker_key("production"))
    assert marker is not None and marker["active"] is False and "nextRun" not in marker
    assert sorted(s["externalId"] for s in manager.remote_schedules()) == ["a", "b"]
    assert manager.prune() == []
    assert fake.schedule(marker_key("production")) is not None


def test_processes_sharing_a_state_directory_register_one_at_a_time(
    fake: FakeTriggerDev, made: List[TriggerDevJobManager], tmp_path: Path
) -> None:
    # The workers of one host boot together: one registers, the others wait for it and
    # then find every schedule stamped, so each job is looked up and created once.
    fake.hang_next(0.15, path="/api/v1/schedules/" + quote("bgjobs:production:job-0", safe=""))
    workers = [process(fake, made, BGJOBS_STATE_DIR=str(tmp_path)) for _ in range(4)]
    for manager in workers:
        for n in range(3):
            manager.schedule_job(f"job-{n}", "Job", noop, 300 * (n + 1))
    for manager in workers:
        wait_until(lambda m=manager: idle(m), timeout=10)
    job_paths = [r.segments[-1] for r in fake.requests if r.segments[-1].startswith("bgjobs:")]
    assert sorted(job_paths) == [f"bgjobs:production:job-{n}" for n in range(3)]
    created = [r.json["deduplicationKey"] for r in fake.writes() if r.path == "/api/v1/schedules"]
    assert created.count("bgjobs:production:job-0") == 1 and len(created) == 4  # + the stamp
    for manager in workers:
        status = manager.get_job_status("job-2")
        assert status is not None and status.last_sync_error is None
