"""The local runtime's timer queue: due times, cancellation, clock steps, the worker pool.

On a :class:`ManualClock`: a timer fires when the test moves the clock past its due time,
and not before, however loaded the machine is. One test keeps the real clock and real
seconds (``condition.wait``, the default ``wait``).
"""

from __future__ import annotations

import threading
import time
from typing import List, Tuple

import pytest
from support_clock import ManualClock, caught_up

from bgjobs._local.timers import WALL_CLOCK_RECHECK, TimerQueue
from bgjobs.schedules import SystemClock

WAIT = 5.0  # real seconds an Event may take to be set: only a broken queue needs them


def manual_queue(max_workers: int = 1) -> Tuple[TimerQueue, ManualClock]:
    clock = ManualClock()
    return TimerQueue(clock, max_workers=max_workers, wait=clock.wait), clock


def test_timers_fire_at_their_due_time_in_order_and_not_before() -> None:
    queue, clock = manual_queue()
    fired: List[str] = []
    late = threading.Event()
    start = clock.monotonic()
    queue.call_at(start + 3, False, lambda: (fired.append("late"), late.set()))
    queue.call_at(start + 1, False, fired.append, "early")
    clock.advance(2.75)
    caught_up(queue, clock)
    assert fired == ["early"]
    clock.advance(0.25)
    assert late.wait(WAIT)
    assert fired == ["early", "late"]


def test_a_timer_armed_before_the_awaited_one_wakes_the_waiter() -> None:
    queue, clock = manual_queue()
    soon = threading.Event()
    queue.call_at(clock.monotonic() + 60, False, lambda: None)  # the waiter waits for this
    queue.call_at(clock.monotonic() + 1, False, soon.set)
    clock.advance(1)
    assert soon.wait(WAIT)


def test_a_cancelled_timer_never_fires() -> None:
    queue, clock = manual_queue()
    fired = threading.Event()
    after = threading.Event()
    handle = queue.call_at(clock.monotonic() + 1, False, fired.set)
    handle.cancel()
    queue.call_at(clock.monotonic() + 2, False, after.set)
    clock.advance(2)
    assert after.wait(WAIT)  # one worker, due order: the cancelled one came up first
    assert not fired.is_set()
    assert queue.pending() == 0


def test_a_wall_clock_timer_follows_a_stepped_clock() -> None:
    queue, clock = manual_queue()
    fired = threading.Event()
    queue.call_at(clock.time() + 3600, True, fired.set)  # a cron due in an hour
    clock.advance(WALL_CLOCK_RECHECK)
    caught_up(queue, clock)
    assert not fired.is_set()
    clock.step(3600.0)  # NTP steps the wall clock forward by an hour
    clock.advance(WALL_CLOCK_RECHECK)  # noticed at the next check, not an hour later
    assert fired.wait(WAIT)


def test_a_wall_clock_timer_waits_on_when_the_clock_goes_back() -> None:
    queue, clock = manual_queue()
    fired = threading.Event()
    queue.call_at(clock.time() + 1, True, fired.set)
    clock.step(-3600.0)  # the wall clock goes back an hour: the cron time is far away again
    clock.advance(1)  # the due time passes on the monotonic clock
    caught_up(queue, clock)
    assert not fired.is_set()
    clock.step(3600.0)
    clock.advance(WALL_CLOCK_RECHECK)
    assert fired.wait(WAIT)


class _CountingClock(ManualClock):
    """A ManualClock that counts how often its monotonic clock was read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return super().monotonic()


def test_a_small_backward_wall_clock_step_does_not_block_arming() -> None:
    """After a backward wall-clock step under the step tolerance the waiter used to re-key
    the timer with the same offset and spin, holding its lock, until the wall clock reached
    the due time (up to 0.5 s of busy loop; call_at blocked meanwhile)."""
    clock = _CountingClock()
    queue = TimerQueue(clock, max_workers=1, wait=clock.wait)
    fired = threading.Event()
    queue.call_at(clock.time() + 1, True, fired.set)
    later = clock.monotonic() + 60
    clock.step(-0.25)  # too small to count as a step: the due time is 0.25 s away again
    reads = clock.reads
    clock.advance(1)  # the monotonic key passes: the waiter wakes and looks at the clock
    deadline = time.monotonic() + WAIT
    while clock.reads == reads and time.monotonic() < deadline:
        time.sleep(0.001)
    armed = threading.Event()
    arming = threading.Thread(
        target=lambda: (queue.call_at(later, False, lambda: None), armed.set()), daemon=True
    )
    arming.start()
    try:
        assert armed.wait(0.25), "call_at blocked: the waiter holds the queue's lock"
    finally:
        clock.advance(0.25)  # the wall clock reaches the due time: any spin ends
        assert fired.wait(WAIT)
        arming.join(WAIT)


def test_the_pool_runs_at_most_max_workers_callbacks_at_once() -> None:
    queue, clock = manual_queue(max_workers=2)
    state = threading.Condition()
    active, peak, finished = [0], [0], [0]
    release = threading.Semaphore(0)

    def slow() -> None:
        with state:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            state.notify_all()
        assert release.acquire(timeout=WAIT)
        with state:
            active[0] -= 1
            finished[0] += 1
            state.notify_all()

    for _ in range(6):
        queue.call_at(clock.monotonic(), False, slow)
    for n in range(6):
        # Both workers busy (or every callback left started): free one, see it finish.
        busy, done = min(2, 6 - n), n + 1
        with state:
            assert state.wait_for(lambda: active[0] == busy, WAIT)  # noqa: B023
        release.release()
        with state:
            assert state.wait_for(lambda: finished[0] == done, WAIT)  # noqa: B023
    assert peak[0] == 2


def test_a_slow_callback_does_not_delay_other_timers() -> None:
    queue, clock = manual_queue(max_workers=4)
    release = threading.Event()
    on_time = threading.Event()
    queue.call_at(clock.monotonic(), False, release.wait, WAIT)
    queue.call_at(clock.monotonic() + 1, False, on_time.set)
    clock.advance(1)
    try:
        assert on_time.wait(WAIT)
        assert not release.is_set()  # the first callback still runs
    finally:
        release.set()


def test_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    queue, clock = manual_queue()
    far = clock.monotonic() + 3600
    for _ in range(5000):
        queue.call_at(far, False, lambda: None).cancel()
    keep = queue.call_at(far, False, lambda: None)
    assert queue.pending() == 1
    assert len(queue._heap) < 200
    keep.cancel()


def test_thousands_of_timers_all_fire_with_a_handful_of_threads() -> None:
    queue, clock = manual_queue(max_workers=8)
    count = 5000
    fired = threading.Semaphore(0)
    before = threading.active_count()
    now = clock.monotonic()
    for i in range(count):
        queue.call_at(now + 1 + (i % 100) / 128, False, fired.release)
    clock.advance(2)
    for _ in range(count):
        assert fired.acquire(timeout=30)
    assert threading.active_count() - before <= 1 + 8


def test_on_the_real_clock_a_timer_waits_real_seconds() -> None:
    """The default wait, ``condition.wait``: never early, and on time within a bound a
    loaded two-core machine keeps."""
    queue = TimerQueue(SystemClock(), max_workers=1)
    fired_at: List[float] = []
    done = threading.Event()
    start = time.monotonic()
    queue.call_at(start + 0.05, False, lambda: (fired_at.append(time.monotonic()), done.set()))
    assert done.wait(WAIT)
    assert 0.05 <= fired_at[0] - start < 2.0


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        TimerQueue(SystemClock(), max_workers=0)


def test_a_timer_armed_by_the_fire_before_it_keeps_the_same_waiting_thread() -> None:
    """One job alone arms its next fire from the run, after the waiter handed this one over
    and found nothing armed: the waiter lingers for it rather than exit and be started
    again (a thread per fire, which made the fire itself late)."""
    queue, clock = manual_queue()
    waiters: List[object] = []
    fired = threading.Event()

    def tick(k: int) -> None:
        if k < 10:
            queue.call_at(clock.monotonic() + 1, False, tick, k + 1)
            waiters.append(queue._waiter)
        else:
            fired.set()

    queue.call_at(clock.monotonic() + 1, False, tick, 1)
    for _ in range(10):
        clock.advance(1)
        caught_up(queue, clock)
    assert fired.wait(WAIT)
    assert len(waiters) == 9 and len(set(map(id, waiters))) == 1 and waiters[0] is not None
    waiter = queue._waiter
    assert isinstance(waiter, threading.Thread)
    queue.shutdown()
    waiter.join(WAIT)  # shutdown ends its lingering at once
    assert not waiter.is_alive()


def test_the_waiting_thread_exits_after_lingering_and_a_new_timer_starts_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bgjobs._local import timers

    monkeypatch.setattr(timers, "WAITER_LINGER", 0.05)
    queue, clock = manual_queue()
    first, second = threading.Event(), threading.Event()
    queue.call_at(clock.monotonic(), False, first.set)
    assert first.wait(WAIT)
    waiter = queue._waiter
    if waiter is not None:
        waiter.join(WAIT)
        assert not waiter.is_alive()
    assert queue._waiter is None
    queue.call_at(clock.monotonic(), False, second.set)
    assert second.wait(WAIT)
    queue.shutdown()
