"""bgjobs' pytest plugin: test when your jobs run, on a manual clock.

Installing bgjobs registers this module under pytest's ``pytest11`` entry point, so pytest
loads it in every session (``-p no:bgjobs`` turns it off); ``import bgjobs`` never does.

::

    def test_reminders_go_out_at_nine(bgjobs_manager, bgjobs_clock):
        bgjobs_manager.schedule_cron_job("r", "R", send, "0 9 * * *", timezone="Europe/Paris")
        bgjobs_clock.set("2026-03-29T06:59:00Z")
        bgjobs_clock.advance(60)
        assert sent == [...]

    def test_the_app_syncs_every_five_minutes(bgjobs_manager, bgjobs_clock):
        bgjobs_manager.load("myapp.jobs")      # APP as the command line takes it
        bgjobs_clock.advance(300)

Fixtures:

* ``bgjobs_clock`` — a :class:`~bgjobs.testing.ManualClock` at 2026-01-01T00:00:00Z.
* ``bgjobs_manager`` — a :class:`~bgjobs.testing.ManualJobManager` on ``bgjobs_clock``
  (settings from the environment, no state directory), closed after the test. Its
  :meth:`~bgjobs.testing.ManualJobManager.load` schedules an APP's registry on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from .testing import ManualClock, ManualJobManager

__all__ = ["bgjobs_clock", "bgjobs_manager"]


@pytest.fixture
def bgjobs_clock() -> ManualClock:
    """A clock that moves only when the test says: ``advance()`` runs the due fires of
    ``bgjobs_manager`` in the test's thread."""
    from .testing import ManualClock  # loaded by the first test that asks, not by pytest

    return ManualClock()


@pytest.fixture
def bgjobs_manager(bgjobs_clock: ManualClock) -> Iterator[ManualJobManager]:
    """The local runtime on ``bgjobs_clock``, its fires run by ``bgjobs_clock.advance()``;
    closed after the test."""
    from .testing import ManualJobManager

    manager = ManualJobManager(bgjobs_clock)
    try:
        yield manager
    finally:
        manager.close()
