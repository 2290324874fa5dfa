"""Time zones the Trigger.dev server accepts (issue 14, item 7): its list is its runtime's
``Intl.supportedValuesOf("timeZone")`` plus UTC, so bgjobs reads it once per sync and sends
the name it has for the same zone, or fails naming the zone."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterator, List
from zoneinfo import ZoneInfo

import pytest
from fake_triggerdev import NODE20_TIMEZONES, FakeTriggerDev
from support_triggerdev import fast_client, make_manager

from bgjobs._trigger_zones import server_zone
from bgjobs.errors import TriggerDevError
from bgjobs.registry import JobRegistry
from bgjobs.triggerdev import TriggerDevJobManager, sync_registry

TASK = "bgjobs-dispatch"


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


def timezone_reads(fake: FakeTriggerDev) -> int:
    return sum(1 for r in fake.requests if r.path == "/api/v1/timezones")


def test_names_node_20_lacks_are_sent_as_the_name_it_has_for_the_zone(
    fake: FakeTriggerDev, made: List[TriggerDevJobManager], caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(fake)
    made.append(manager)
    zones = {
        "kolkata": "Asia/Kolkata",
        "kyiv": "Europe/Kyiv",
        "eastern": "US/Eastern",
        "etc-utc": "Etc/UTC",
        "paris": "Europe/Paris",
        "kolkata-2": "Asia/Kolkata",
    }
    with caplog.at_level(logging.INFO, logger="bgjobs.triggerdev"):
        for job_id, tz in zones.items():
            manager.schedule_cron_job(job_id, job_id, noop, "0 9 * * *", timezone=tz)
        assert set(manager.sync(timeout=10).values()) == {"created"}
    sent = {s["externalId"]: s["timezone"] for s in fake.schedules}
    assert sent == {
        "kolkata": "Asia/Calcutta",
        "kyiv": "Europe/Kiev",
        "eastern": "America/New_York",
        "etc-utc": "UTC",
        "paris": "Europe/Paris",
        "kolkata-2": "Asia/Calcutta",
    }
    # Once per sync, not once per job (the background registration that schedule_* starts
    # may have read it once before sync() began).
    assert 1 <= timezone_reads(fake) <= 2
    renames = [r.getMessage() for r in caplog.records if "knows time zone" in r.getMessage()]
    assert len(renames) == 4  # each mapping once: Kolkata's second job is not logged again
    assert any("'Asia/Kolkata' as 'Asia/Calcutta'" in m for m in renames)

    # The next deploy's sync finds everything as sent: unchanged, nothing written.
    fake.clear_requests()
    made.append(make_manager(fake))
    report = sync_registry(registry_of(zones), manager=made[-1])
    assert report.unchanged == list(zones) and not report.created and not report.updated
    assert 1 <= timezone_reads(fake) <= 2
    assert fake.writes() == []
    # What the deploy step prints is what the server has.
    assert report.schedules["kolkata"] == ("0 9 * * *", "Asia/Calcutta")


def registry_of(zones: Dict[str, str]) -> JobRegistry:
    registry = JobRegistry()
    for job_id, tz in zones.items():
        registry.cron(job_id, job_id, "0 9 * * *", timezone=tz)(noop)
    return registry


def test_a_zone_the_server_has_no_equivalent_for_fails_naming_it(
    made: List[TriggerDevJobManager],
) -> None:
    with FakeTriggerDev(timezones=["UTC", "Europe/Paris"]) as fake:
        manager = make_manager(fake)
        made.append(manager)
        manager.schedule_cron_job("tokyo", "Tokyo", noop, "0 9 * * *", timezone="Asia/Tokyo")
        manager.schedule_cron_job("paris", "Paris", noop, "0 9 * * *", timezone="Europe/Paris")
        with pytest.raises(TriggerDevError) as excinfo:
            manager.sync(timeout=10)
        message = str(excinfo.value)
        assert "'tokyo'" in message and "'Asia/Tokyo'" in message
        assert [s["externalId"] for s in fake.schedules] == ["paris"]
        status = manager.get_job_status("tokyo")
        assert status is not None and "Asia/Tokyo" in (status.last_sync_error or "")


def test_a_server_without_the_list_gets_the_name_as_it_is(
    fake: FakeTriggerDev, made: List[TriggerDevJobManager]
) -> None:
    fake.fail_next(404, path="/api/v1/timezones")
    manager = make_manager(fake)
    made.append(manager)
    manager.schedule_cron_job("paris", "Paris", noop, "0 9 * * *", timezone="Europe/Paris")
    assert manager.sync(timeout=10) == {"paris": "created"}
    assert fake.schedules[0]["timezone"] == "Europe/Paris"


def test_utc_needs_no_list(fake: FakeTriggerDev, made: List[TriggerDevJobManager]) -> None:
    manager = make_manager(fake)
    made.append(manager)
    manager.schedule_job("every-5", "Every 5", noop, 300)
    assert manager.sync(timeout=10) == {"every-5": "created"}
    assert timezone_reads(fake) == 0


# -- the fake enforces its list, as the live server does ---------------------------------------


def test_fake_serves_and_enforces_node_20s_list(fake: FakeTriggerDev) -> None:
    client = fast_client(fake)
    zones = client.timezones()
    assert zones[0] == "UTC" and "Asia/Calcutta" in zones and "Europe/Kiev" in zones
    for missing in ("Asia/Kolkata", "Europe/Kyiv", "Etc/UTC", "US/Eastern"):
        assert missing not in zones
        with pytest.raises(TriggerDevError) as excinfo:
            client.create_schedule(TASK, "0 9 * * *", deduplication_key=missing, timezone=missing)
        assert excinfo.value.status == 422 and f"Invalid IANA timezone: '{missing}'" in str(
            excinfo.value
        )
    client.create_schedule(TASK, "0 9 * * *", deduplication_key="ok", timezone="Asia/Calcutta")
    assert "UTC" in NODE20_TIMEZONES


# -- the mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Asia/Kolkata", "Asia/Calcutta"),
        ("Europe/Kyiv", "Europe/Kiev"),
        ("US/Eastern", "America/New_York"),
        ("US/Pacific", "America/Los_Angeles"),
        ("Etc/UTC", "UTC"),
        ("Etc/Universal", "UTC"),
        ("Zulu", "UTC"),
        ("America/Nuuk", "America/Godthab"),
        ("Europe/Paris", "Europe/Paris"),
        ("No/Such_Zone", None),
    ],
)
def test_server_zone_on_node_20s_list(name: str, expected: object) -> None:
    assert server_zone(name, NODE20_TIMEZONES) == expected


def test_server_zone_goes_the_other_way_for_a_newer_server() -> None:
    newer = ["UTC", "Asia/Kolkata", "Europe/Kyiv"]
    assert server_zone("Asia/Calcutta", newer) == "Asia/Kolkata"
    assert server_zone("Europe/Kiev", newer) == "Europe/Kyiv"


def test_server_zone_falls_back_to_a_zone_with_the_same_offsets() -> None:
    found = server_zone("Etc/GMT-9", NODE20_TIMEZONES)  # +09:00 all year, not on the list
    assert found is not None and found in NODE20_TIMEZONES
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for week in range(0, 600, 13):
        instant = start + timedelta(weeks=week)
        assert instant.astimezone(ZoneInfo(found)).utcoffset() == timedelta(hours=9)
    assert server_zone("Asia/Tokyo", ["UTC", "Europe/Paris"]) is None
