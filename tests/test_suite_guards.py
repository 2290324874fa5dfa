"""The suite's own guards fail a test when they should: run in a sandboxed pytest session
(pytester) with this directory's conftest.py, on tests written to break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

BROKEN_TICK = """
    import threading

    import pytest
    from support_clock import ManualClock

    from bgjobs.local import LocalJobManager


    def run_a_broken_tick(monkeypatch):
        # _fire raises for one job: TimerQueue catches it and logs CRITICAL, and the
        # worker thread lives on, so threading.excepthook never hears of it.
        original = LocalJobManager._fire

        def fire(self, job, due, *rest):
            if job.id == "broken":
                raise RuntimeError("a bug in the tick")
            original(self, job, due, *rest)

        monkeypatch.setattr(LocalJobManager, "_fire", fire)
        clock = ManualClock()
        manager = LocalJobManager(clock=clock, env={}, max_workers=1)
        after = threading.Event()
        manager.schedule_job("broken", "Broken", lambda: None, 1)
        manager.schedule_job("after", "After", after.set, 2)
        clock.advance(2)
        # One worker takes the fires in due order: the broken one has been logged by now.
        assert after.wait(5)
        manager.shutdown(timeout=5)


    def test_a_broken_tick_fails_the_test(monkeypatch, thread_errors):
        run_a_broken_tick(monkeypatch)


    @pytest.mark.allow_critical
    def test_a_test_may_allow_it(monkeypatch):
        run_a_broken_tick(monkeypatch)


    def test_an_error_log_is_not_critical():
        import logging

        logging.getLogger("bgjobs.execution").error("a job failed: that is the job's problem")
"""


@pytest.mark.allow_critical  # the sandboxed session logs on the same "bgjobs" logger
def test_a_critical_record_from_bgjobs_fails_the_test_unless_allowed(
    pytester: pytest.Pytester, request: pytest.FixtureRequest
) -> None:
    pytester.makeconftest((HERE / "conftest.py").read_text())
    shutil.copy(HERE / "support_clock.py", pytester.path / "support_clock.py")
    markers = "\n".join(f"    {line}" for line in request.config.getini("markers"))
    pytester.makeini(f"[pytest]\naddopts = --strict-markers\nmarkers =\n{markers}\n")
    pytester.makepyfile(test_broken=BROKEN_TICK)

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_a_broken_tick_fails_the_test*",
            "*bgjobs logged at CRITICAL*",
            "*bgjobs._local.timers: bgjobs timer callback failed"
            " [[]RuntimeError: a bug in the tick[]]*",
        ]
    )
