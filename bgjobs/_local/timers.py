"""Timers for the local runtime: one waiting thread per manager, runs on a worker pool.

A :class:`TimerQueue` keeps one timer per job — fired at an absolute due time,
cancellable — in a heap served by one daemon thread that waits for the earliest due time
and hands each fire to a small pool of reusable daemon workers. That scales where a thread
per job does not: a heap entry costs next to nothing, a sleeping thread does (``benchmarks/``).

Due times are read on the clock of their schedule: monotonic for intervals, the wall
clock (Unix time) for crons. The heap is ordered on the monotonic clock; a wall-clock
due time is converted when it is armed and converted again whenever the wall clock is
seen to have been stepped (NTP, suspend/resume), checked at least every
:data:`WALL_CLOCK_RECHECK` seconds.

The pool never grows past ``max_workers``: it is the bound a user sizes by (connections,
memory), and a run that hangs cannot be told from one that is long. So a fire that finds
every worker busy waits, in order — and never in silence: once a fire has waited
:data:`STARVED_AFTER` seconds, a watching thread (started only while fires wait) reports
it with what occupies the pool to the queue's ``on_starved`` (the local runtime logs it,
counts it and shows it in the job's status).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Set, Tuple

from .. import _time
from .._process import end_process_if_main_thread
from ..config import DEFAULT_MAX_WORKERS
from ..schedules import Clock

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "FROZEN_RECHECK",
    "STARVED_AFTER",
    "WAITER_LINGER",
    "WALL_CLOCK_RECHECK",
    "OnStarved",
    "TimerHandle",
    "TimerQueue",
    "Wait",
]

logger = logging.getLogger(__name__)

WALL_CLOCK_RECHECK = 60.0
"""Seconds between checks that the wall clock was not stepped while a cron job waits."""

FROZEN_RECHECK = 1.0
"""The same while freezegun patches the time: a test's ``move_to()`` is a step it expects
to be seen within a second, not a minute."""

_WORKER_IDLE_SECONDS = 30.0  # a worker with nothing to do for this long exits
_COMPACT_MIN = 64  # heap size at which cancelled timers are first swept out
_STEP_TOLERANCE = 0.5  # seconds the wall clock may move against the monotonic one unnoticed

WAITER_LINGER = 30.0
"""Seconds the waiting thread waits for a timer once none is armed before it exits (a
later :meth:`TimerQueue.call_at` starts another)."""

STARVED_AFTER = 1.0
"""Seconds a due fire may wait for a free worker before it is reported as starved."""

Wait = Callable[[threading.Condition, float], object]
"""``wait(condition, timeout)``: called with ``condition`` held, returns once ``timeout``
seconds have passed on the queue's clock or ``condition`` was notified (early returns are
fine: due times are checked again)."""


def _recheck() -> float:
    return FROZEN_RECHECK if _time.freezegun_active() else WALL_CLOCK_RECHECK


class TimerHandle:
    """One armed timer: fires ``callback(*args)`` at ``due``, unless cancelled first."""

    __slots__ = ("_key", "args", "callback", "cancelled", "due", "handed_over", "wall_clock")

    def __init__(
        self, due: float, wall_clock: bool, callback: Callable[..., None], args: Tuple[Any, ...]
    ) -> None:
        #: The due time, on the wall clock if ``wall_clock`` else on the monotonic clock.
        self.due = due
        self.wall_clock = wall_clock
        self.callback = callback
        self.args = args
        self.cancelled = False
        self._key = 0.0  # the due time on the monotonic clock: the heap's order
        #: When the waiting thread handed the fire to the pool (monotonic clock), or None:
        #: ``handed_over - due`` is how late the timer came up, the rest is the pool's wait.
        self.handed_over: Optional[float] = None

    def cancel(self) -> None:
        """Never fire. Idempotent; the heap entry is dropped when it comes up."""
        self.cancelled = True

    def __lt__(self, other: TimerHandle) -> bool:
        return self._key < other._key

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "armed"
        return f"<TimerHandle due={self.due:.3f} {state}>"


OnStarved = Callable[[List[TimerHandle], List[Tuple[TimerHandle, float]], List[int]], object]
"""``on_starved(starved, waiting, workers)``: ``starved`` fires have now waited
:data:`STARVED_AFTER` seconds for a worker (each is reported once); ``waiting`` is every
fire waiting, with the seconds it has waited, oldest first; ``workers`` the pool's thread
idents (what each runs is the owner's to know). Called on the watching thread, without
any lock held."""


class TimerQueue:
    """Fires timers at their due times on a pool of at most ``max_workers`` threads.

    The waiting thread only pops due timers and hands them over, so a slow callback
    never delays another timer; when every worker is busy, fires wait in order for one.
    Threads are daemons named ``<name>`` (the waiter), ``<name>-worker`` and
    ``<name>-watch`` (while fires wait for a worker), and exit when there has been nothing
    to do for a while (:data:`WAITER_LINGER`; at once at shutdown). ``wait`` is how the
    waiter waits for the next due time (see :data:`Wait`), like ``sched.scheduler``'s
    ``delayfunc``; ``None`` means the clock's own ``wait`` (real seconds for the system
    clock, the test's hand for a manual clock). ``on_starved`` hears
    of each fire that waited ``starved_after`` seconds for a worker (see :data:`OnStarved`).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        max_workers: int,
        name: str = "bgjobs",
        wait: Optional[Wait] = None,
        on_starved: Optional[OnStarved] = None,
        starved_after: float = STARVED_AFTER,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        self._clock = clock
        self._wait = wait if wait is not None else clock.wait
        self._on_starved = on_starved
        self._starved_after = starved_after
        self._max_workers = max_workers
        self._name = name
        self._seq = itertools.count()
        self._setup()

    def _setup(self) -> None:
        # Guards _heap, _waiter, _offset and _shutdown; notified when a timer is armed
        # earlier than the one the waiter waits for, and at shutdown.
        self._cond = threading.Condition(threading.Lock())
        self._shutdown = False
        self._heap: List[Tuple[float, int, TimerHandle]] = []
        self._compact_at = _COMPACT_MIN
        self._waiter: Optional[threading.Thread] = None
        self._offset = self._clock.time() - self._clock.monotonic()
        # Guards _tasks, _reported, _workers, _worker_ids, _idle (workers waiting for a
        # task), _watching, _drained_at and _pool_shutdown. _pool_cond is notified when a
        # task is queued, and at shutdown; _watch_cond, on the same lock, at shutdown (a
        # condition of its own, so a task's notify never wakes the watch instead of an
        # idle worker).
        pool_lock = threading.Lock()
        self._pool_cond = threading.Condition(pool_lock)
        self._watch_cond = threading.Condition(pool_lock)
        # (fire, since when it waits for a busy pool on the monotonic clock, or None when an
        # idle or new worker was there for it), in the order queued.
        self._tasks: Deque[Tuple[TimerHandle, Optional[float]]] = deque()
        # How many fires at the front of _tasks the watch is done with (reported, or never
        # waited): since-times grow along the queue, so they are always a prefix.
        self._reported = 0
        self._workers = 0
        self._worker_ids: Set[int] = set()
        self._idle = 0
        self._watching = False
        self._drained_at = 0.0  # monotonic time the watched queue last became empty
        self._pool_shutdown = False

    def reinit_after_fork(self) -> None:
        """In a forked child: drop every timer and thread of the parent (none survive
        ``fork()``) and every lock (one may have been held); the owner re-arms."""
        self._setup()

    # -- arming -------------------------------------------------------------------------------

    def call_at(
        self, due: float, wall_clock: bool, callback: Callable[..., None], *args: Any
    ) -> TimerHandle:
        """Arm a timer for ``due`` (Unix time if ``wall_clock``, else monotonic)."""
        handle = TimerHandle(due, wall_clock, callback, args)
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot arm a timer after the timer queue was shut down")
            handle._key = self._key(handle)
            entry = (handle._key, next(self._seq), handle)
            heapq.heappush(self._heap, entry)
            if len(self._heap) >= self._compact_at:
                # Cancelled timers leave the heap only when they come up; a program that
                # keeps replacing long-interval jobs would otherwise grow it without end.
                self._heap = [e for e in self._heap if not e[2].cancelled]
                heapq.heapify(self._heap)
                self._compact_at = max(_COMPACT_MIN, 2 * len(self._heap))
            if self._waiter is None:
                self._waiter = threading.Thread(target=self._wait_loop, name=self._name)
                self._waiter.daemon = True
                self._waiter.start()
            elif self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def _key(self, handle: TimerHandle) -> float:
        return handle.due - self._offset if handle.wall_clock else handle.due

    def shutdown(self) -> None:
        """Drop every timer and let the waiting thread and idle workers exit now; a
        callback already running finishes. Idempotent; :meth:`call_at` raises after it."""
        with self._cond:
            self._shutdown = True
            for _, _, handle in self._heap:
                handle.cancel()
            self._heap.clear()
            self._cond.notify_all()
        with self._pool_cond:
            self._pool_shutdown = True
            self._tasks.clear()
            self._reported = 0
            self._pool_cond.notify_all()
            self._watch_cond.notify_all()

    # -- the waiting thread -------------------------------------------------------------------

    def _wait_loop(self) -> None:
        while True:
            with self._cond:
                due = self._next_due()
                if due is None:
                    self._waiter = None  # nothing armed a while: exit; call_at starts one
                    return
            self._submit(due)

    def _next_due(self) -> Optional[TimerHandle]:
        """Wait for the earliest live timer to fall due and pop it; ``None`` if none is
        armed. Called with ``_cond`` held."""
        while True:
            self._notice_clock_step()
            heap = self._heap
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
            if not heap:
                # Linger for a next timer: a job alone arms its next fire from the run,
                # after the waiter handed this one over, and it cost a thread per fire.
                if self._shutdown or (not self._cond.wait(WAITER_LINGER) and not self._heap):
                    return None
                continue
            key, _, handle = heap[0]
            remaining = key - self._clock.monotonic()
            if remaining <= 0:
                heapq.heappop(heap)
                early = handle.due - self._clock.time() if handle.wall_clock else 0.0
                if early > 0:
                    # The wall clock went back after the key was computed: wait on. A step
                    # smaller than the tolerance leaves the offset (and so the key) as it
                    # was, so wait out the difference itself rather than spin on the lock.
                    handle._key = self._key(handle)
                    heapq.heappush(heap, (handle._key, next(self._seq), handle))
                    if handle._key <= self._clock.monotonic():
                        self._wait(self._cond, min(early, _recheck()))
                    continue
                handle.handed_over = self._clock.monotonic()
                return handle
            self._wait(self._cond, min(remaining, _recheck()))

    def _notice_clock_step(self) -> None:
        offset = self._clock.time() - self._clock.monotonic()
        if abs(offset - self._offset) <= _STEP_TOLERANCE:
            return
        self._offset = offset
        rekeyed = []
        for _, seq, handle in self._heap:
            if handle.wall_clock:
                handle._key = self._key(handle)
            rekeyed.append((handle._key, seq, handle))
        heapq.heapify(rekeyed)
        self._heap = rekeyed

    # -- the worker pool ---------------------------------------------------------------------

    def _submit(self, handle: TimerHandle) -> None:
        with self._pool_cond:
            if self._pool_shutdown:
                return
            tasks = self._tasks
            if len(tasks) < self._idle or self._workers < self._max_workers:
                tasks.append((handle, None))  # an idle or a new worker takes it at once
            else:  # it waits for a busy worker: from when, and make sure someone watches
                tasks.append((handle, self._clock.monotonic()))
                self._watch()
            if self._idle:
                self._pool_cond.notify()
            # Idle workers take queued tasks themselves; start one only for the excess.
            if len(tasks) <= self._idle or self._workers >= self._max_workers:
                return
            self._workers += 1
        self._start_thread(self._work, "worker")

    def _start_thread(self, target: Callable[[], None], role: str) -> None:
        thread = threading.Thread(target=target, name=f"{self._name}-{role}")
        thread.daemon = True
        thread.start()

    def _watch(self) -> None:
        """Start the watching thread unless it runs. Called with the pool lock held."""
        if self._on_starved is None or self._watching:
            # No need to wake a running watch: it wakes by the time this fire could be
            # starved anyway (queued fires are in order, and it waits at most
            # starved_after), and a wake per fire would cost a scan of the queue per fire.
            return
        self._watching = True
        try:
            self._start_thread(self._watch_loop, "watch")
        except BaseException:
            self._watching = False
            raise

    def _watch_loop(self) -> None:
        """While fires wait for a worker, report each that has waited ``starved_after``.

        Ends once the queue has stayed empty for ``starved_after``: a busy pool empties
        and fills its queue many times a second, and a thread start each time would cost
        more than the watch itself."""
        assert self._on_starved is not None
        with self._pool_cond:
            while True:
                now = self._clock.monotonic()
                if self._pool_shutdown:
                    self._watching = False
                    return
                if not self._tasks:
                    left = self._drained_at + self._starved_after - now
                    if left <= 0:
                        self._watching = False
                        return
                    self._wait(self._watch_cond, left)
                    continue
                starved = []
                next_check = self._starved_after
                tasks = self._tasks
                while self._reported < len(tasks):  # oldest first
                    handle, since = tasks[self._reported]
                    if since is not None:
                        left = since + self._starved_after - now
                        if left > 0:
                            next_check = left  # and every later fire is due later still
                            break
                        starved.append(handle)
                    self._reported += 1
                if starved:
                    waiting = [(h, now - since) for h, since in tasks if since is not None]
                    workers = list(self._worker_ids)
                    self._pool_cond.release()  # no lock held while the owner reports
                    try:
                        self._on_starved(starved, waiting, workers)
                    except Exception:  # a bug in the report must not stop the watch
                        logger.critical("bgjobs: reporting starved fires failed", exc_info=True)
                    finally:
                        self._pool_cond.acquire()
                    continue
                self._wait(self._watch_cond, next_check)

    def waiting(self) -> List[Tuple[TimerHandle, float]]:
        """The fires waiting for a worker, oldest first, with since when (monotonic)."""
        with self._pool_cond:
            return [(handle, since) for handle, since in self._tasks if since is not None]

    def _work(self) -> None:
        me = threading.get_ident()
        with self._pool_cond:
            self._worker_ids.add(me)
        while True:
            with self._pool_cond:
                self._idle += 1
                while not self._tasks:
                    if self._pool_shutdown or (
                        not self._pool_cond.wait(_WORKER_IDLE_SECONDS) and not self._tasks
                    ):
                        self._idle -= 1
                        self._workers -= 1
                        self._worker_ids.discard(me)
                        return
                self._idle -= 1
                handle = self._tasks.popleft()[0]
                if self._reported:
                    self._reported -= 1
                if self._watching and not self._tasks:
                    self._drained_at = self._clock.monotonic()
            if handle.cancelled:
                continue
            try:
                handle.callback(*handle.args)
            except (SystemExit, KeyboardInterrupt) as exc:
                # In a child forked on this worker, this is the child's only thread: the
                # child must end here, not go on serving the parent's timers.
                end_process_if_main_thread(exc)
                logger.critical("bgjobs timer callback %r raised %r", handle, exc)
            except BaseException:  # the callback handles job errors; this is a bug
                logger.critical("bgjobs timer callback failed", exc_info=True)

    def pending(self) -> int:
        """Armed, uncancelled timers (for tests and diagnostics)."""
        with self._cond:
            return sum(1 for _, _, handle in self._heap if not handle.cancelled)
