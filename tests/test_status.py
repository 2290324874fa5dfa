"""What a status shows: last success, last failure and the last error outlive the next run."""

from __future__ import annotations

from typing import List

from bgjobs import LocalJobManager


def test_the_last_error_is_kept_after_a_later_success() -> None:
    outcomes: List[bool] = [False, True]

    def flaky() -> None:
        if not outcomes.pop(0):
            raise ValueError("upstream down")

    with LocalJobManager(env={}) as manager:
        manager.schedule_job("flaky", "Flaky", flaky, 3600)
        assert manager.trigger_job("flaky")
        failed = manager.get_job_status("flaky")
        assert failed is not None and failed.status == "failed"
        assert failed.error == failed.last_error == "ValueError: upstream down"
        assert failed.last_failure == failed.last_run and failed.last_success is None

        assert manager.trigger_job("flaky")
        ok = manager.get_job_status("flaky")
        assert ok is not None and ok.status == "completed" and ok.error is None
        assert ok.last_error == "ValueError: upstream down"  # kept: it is history
        assert ok.last_success == ok.last_run
        assert ok.last_failure == failed.last_run
        assert ok.to_dict()["last_error"] == "ValueError: upstream down"
