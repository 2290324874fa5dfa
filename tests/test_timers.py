"""The local runtime's timer queue: due times, cancellation, clock steps, the worker pool."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

import bgjobs._local.timers as timers
from bgjobs._local.timers import TimerQueue
from bgjobs.schedules import SystemClock


class SteppableClock:
    """The real monotonic clock, and a wall clock a test can step like NTP would."""

    def __init__(self) -> None:
        self.step = 0.0

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time() + self.step


def test_timers_fire_at_their_due_time_in_order() -> None:
    queue = TimerQueue(SystemClock(), max_workers=1)
    fired: List[str] = []
    done = threading.Event()
    start = time.monotonic()
    queue.call_at(start + 0.15, False, lambda: (fired.append("late"), done.set()))
    queue.call_at(start + 0.05, False, fired.append, "early")
    assert done.wait(5)
    assert fired == ["early", "late"]
    assert time.monotonic() - start >= 0.15


def test_a_cancelled_timer_never_fires() -> None:
    queue = TimerQueue(SystemClock(), max_workers=1)
    fired = threading.Event()
    after = threading.Event()
    handle = queue.call_at(time.monotonic() + 0.05, False, fired.set)
    handle.cancel()
    queue.call_at(time.monotonic() + 0.1, False, after.set)
    assert after.wait(5)
    assert not fired.is_set()


def test_a_wall_clock_timer_follows_a_stepped_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timers, "WALL_CLOCK_RECHECK", 0.05)
    clock = SteppableClock()
    queue = TimerQueue(clock, max_workers=1)
    fired = threading.Event()
    queue.call_at(clock.time() + 3600, True, fired.set)  # a cron due in an hour
    assert not fired.wait(0.2)
    clock.step = 3600.0  # NTP steps the wall clock forward by an hour
    assert fired.wait(5)


def test_a_wall_clock_timer_waits_on_when_the_clock_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timers, "WALL_CLOCK_RECHECK", 0.05)
    clock = SteppableClock()
    queue = TimerQueue(clock, max_workers=1)
    fired = threading.Event()
    queue.call_at(clock.time() + 0.3, True, fired.set)
    clock.step = -3600.0  # the wall clock goes back an hour: the cron time is far away again
    assert not fired.wait(0.8)
    clock.step = 0.0
    assert fired.wait(5)


def test_the_pool_runs_at_most_max_workers_callbacks_at_once() -> None:
    queue = TimerQueue(SystemClock(), max_workers=2)
    lock = threading.Lock()
    active, peak, done = [0], [0], threading.Semaphore(0)

    def slow() -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        done.release()

    now = time.monotonic()
    for _ in range(6):
        queue.call_at(now, False, slow)
    for _ in range(6):
        assert done.acquire(timeout=5)
    assert peak[0] == 2


def test_a_slow_callback_does_not_delay_other_timers() -> None:
    queue = TimerQueue(SystemClock(), max_workers=4)
    release = threading.Event()
    on_time = threading.Event()
    now = time.monotonic()
    queue.call_at(now, False, release.wait, 5)
    queue.call_at(now + 0.05, False, on_time.set)
    assert on_time.wait(1)
    release.set()


def test_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    queue = TimerQueue(SystemClock(), max_workers=1)
    far = time.monotonic() + 3600
    for _ in range(5000):
        queue.call_at(far, False, lambda: None).cancel()
    keep = queue.call_at(far, False, lambda: None)
    assert queue.pending() == 1
    assert len(queue._heap) < 200
    keep.cancel()


def test_thousands_of_timers_all_fire_with_a_handful_of_threads() -> None:
    queue = TimerQueue(SystemClock(), max_workers=8)
    count = 5000
    fired = threading.Semaphore(0)
    before = threading.active_count()
    now = time.monotonic()
    for i in range(count):
        queue.call_at(now + 0.1 + (i % 100) / 1000, False, fired.release)
    for _ in range(count):
        assert fired.acquire(timeout=30)
    assert threading.active_count() - before <= 1 + 8


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        TimerQueue(SystemClock(), max_workers=0)
