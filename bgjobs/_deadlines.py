"""One thread per manager that calls back when runs pass their ``timeout``.

Started on the first run with a timeout and gone when none is pending, so managers whose
jobs have no timeout never start it. It waits on the manager's clock (``Clock.wait``), so a
manual clock in tests moves deadlines exactly like timers. Callbacks run on this thread
and must be quick (set an event, log, queue a listener call): they never call a job.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from typing import Callable, List, Optional, Tuple

from .schedules import Clock

__all__ = ["Deadline", "DeadlineWatcher"]

logger = logging.getLogger(__name__)

_MAX_WAIT = 60.0  # seconds between looks at the clock, whatever the next deadline


class Deadline:
    """One armed deadline; :meth:`DeadlineWatcher.cancel` it when the run ends first."""

    __slots__ = ("callback", "cancelled", "due", "fired")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False
        self.fired = False


class DeadlineWatcher:
    """Calls each :class:`Deadline`'s callback once the clock's monotonic time reaches it."""

    def __init__(self, clock: Clock, name: str = "bgjobs-timeouts") -> None:
        self._clock = clock
        self._name = name
        self._setup()

    def _setup(self) -> None:
        # Guards _heap, _thread and every Deadline's cancelled/fired flags; notified when
        # an earlier deadline is added.
        self._cond = threading.Condition(threading.Lock())
        self._heap: List[Tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def reinit_after_fork(self) -> None:
        """In a forked child: the thread is gone and the lock may be held; start afresh."""
        self._setup()

    def add(self, due: float, callback: Callable[[], None]) -> Deadline:
        """Call ``callback`` at monotonic time ``due`` unless cancelled first."""
        deadline = Deadline(due, callback)
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), deadline))
            if self._thread is None:
                thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # interpreter exit (3.12+): the deadline never fires
                    return deadline
                self._thread = thread
            elif self._heap[0][2] is deadline:
                self._cond.notify()
        return deadline

    def cancel(self, deadline: Deadline) -> bool:
        """Drop ``deadline``; ``True`` if it had not fired (its callback will not run)."""
        with self._cond:
            if deadline.fired:
                return False
            deadline.cancelled = True
            if self._heap and self._heap[0][2] is deadline:
                self._cond.notify()  # the thread may go (nothing left) or wait for the next
            return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                deadline = self._next()
                if deadline is None:
                    self._thread = None
                    return
                deadline.fired = True
            try:
                deadline.callback()
            except Exception:  # a bug: the thread must survive it for the other runs
                logger.critical("bgjobs timeout callback failed", exc_info=True)

    def _next(self) -> Optional[Deadline]:
        """Wait for the earliest live deadline and pop it; ``None`` once none is left.
        Called with ``_cond`` held."""
        heap = self._heap
        while True:
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
            if not heap:
                return None
            remaining = heap[0][0] - self._clock.monotonic()
            if remaining <= 0:
                return heapq.heappop(heap)[2]
            self._clock.wait(self._cond, min(remaining, _MAX_WAIT))
