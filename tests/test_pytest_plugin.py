"""The pytest plugin: registered through the pytest11 entry point, loaded by pytest and
never by ``import bgjobs``; its fixtures work in a project that only installed bgjobs."""

from __future__ import annotations

import configparser
import subprocess
import sys
from typing import List

import pytest
from support_cli import REPO

from bgjobs.testing import ManualClock, ManualJobManager


def _entry_points() -> List[str]:
    from importlib.metadata import entry_points

    found = entry_points()
    group = (
        found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", [])  # type: ignore[attr-defined]  # Python 3.9
    )
    return [f"{ep.name} = {ep.value}" for ep in group]


def test_setup_cfg_registers_the_plugin_under_pytest11() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["pytest11"].split("\n")
    assert "bgjobs = bgjobs.pytest_plugin" in [line.strip() for line in lines]


def test_import_bgjobs_loads_neither_the_plugin_nor_pytest() -> None:
    code = (
        "import sys, bgjobs, bgjobs.testing\n"
        "bgjobs.LocalJobManager\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pytest', '_pytest', "
        "'bgjobs.pytest_plugin'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_the_projects_own_session_has_the_fixtures(
    bgjobs_manager: ManualJobManager, bgjobs_clock: ManualClock
) -> None:
    assert bgjobs_manager.clock is bgjobs_clock
    assert bgjobs_manager.state_dir is None


FRESH_PROJECT_TESTS = """
    import threading

    from bgjobs import JobRegistry
    from bgjobs.testing import ManualClock, ManualJobManager

    sent = []
    managers = []


    def send():
        sent.append(threading.get_ident())


    def test_reminders_go_out_at_nine(bgjobs_manager, bgjobs_clock):
        assert isinstance(bgjobs_clock, ManualClock)
        assert isinstance(bgjobs_manager, ManualJobManager)
        managers.append(bgjobs_manager)
        bgjobs_manager.schedule_cron_job("r", "R", send, "0 9 * * *", timezone="Europe/Paris")
        bgjobs_clock.set("2026-03-29T06:59:00Z")
        bgjobs_clock.advance(60)
        assert sent == [threading.get_ident()]


    def test_the_manager_was_closed_after_the_test():
        (manager,) = managers
        assert manager.closed


    def test_an_app_is_loaded_onto_the_manual_clock(bgjobs_manager, bgjobs_clock):
        registry = bgjobs_manager.load("myjobs")
        assert [d.id for d in registry] == ["sync"]
        bgjobs_clock.advance(900)
        assert bgjobs_manager.get_job_status("sync").runs == 3


    def test_each_test_gets_a_fresh_clock(bgjobs_clock):
        assert bgjobs_clock.now().isoformat() == "2026-01-01T00:00:00+00:00"
"""

FRESH_PROJECT_JOBS = """
    from bgjobs import JobRegistry

    jobs = JobRegistry()


    @jobs.interval("sync", "Sync", minutes=5)
    def sync():
        pass
"""


def test_the_fixtures_work_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    if "bgjobs = bgjobs.pytest_plugin" not in _entry_points():
        pytest.skip("this bgjobs install predates its pytest11 entry point: pip install -e . again")
    # Only the two files below: no conftest, no pytest_plugins, nothing from this checkout
    # but the installed package; a subprocess, so the entry point is what loads the plugin.
    pytester.makepyfile(test_jobs=FRESH_PROJECT_TESTS, myjobs=FRESH_PROJECT_JOBS)
    pytester.makeini("[pytest]\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4)

    listed = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    listed.stdout.fnmatch_lines(["*bgjobs_clock*", "*bgjobs_manager*"])

    disabled = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:bgjobs")
    disabled.stdout.fnmatch_lines(["*fixture 'bgjobs_manager' not found*"])
