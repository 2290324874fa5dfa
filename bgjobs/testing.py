"""Testing your jobs: a clock that moves only when told, and a manager that runs on it.

::

    from bgjobs.testing import ManualClock, ManualJobManager

    clock = ManualClock("2026-03-29T06:59:00Z")
    with ManualJobManager(clock) as manager:
        manager.schedule_cron_job("r", "Reminders", send, "0 9 * * *", timezone="Europe/Paris")
        clock.advance(60)          # 07:00Z = 09:00 in Paris: send() ran, here, already
        assert manager.get_job_status("r").runs == 1

:class:`ManualJobManager` is the local runtime (:class:`~bgjobs.local.LocalJobManager`)
with its timer thread and worker pool replaced by the caller: :meth:`ManualClock.advance`
moves the clock to each due time in turn and runs what is due there, synchronously, in the
calling thread, in due order; :meth:`ManualClock.run_due` runs what is due now. Everything
after "a timer fired" is the real runtime's code — the next due time, coalesced misses
counted as skips, the overlap lock, status, metrics, run history, pausing — so a test sees
what production would, without a thread or a real second.

The pytest plugin (:mod:`bgjobs.pytest_plugin`) offers both as the fixtures
``bgjobs_clock`` and ``bgjobs_manager``.
"""

from __future__ import annotations

import os
import threading
import weakref
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from ._deadlines import Deadline, DeadlineWatcher
from ._local.timers import TimerHandle, TimerQueue
from .config import Settings
from .listeners import JobEvent, ListenerSet
from .local import LocalJobManager
from .schedules import utc_datetime
from .store import StateStore
from .types import JobRun

if TYPE_CHECKING:
    from .registry import JobRegistry

__all__ = ["DEFAULT_START", "ManualClock", "ManualJobManager"]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
"""Where a :class:`ManualClock` starts unless told: a fixed time, so tests repeat exactly."""

Instant = Union[float, datetime, str]
"""A point in time: Unix seconds, an aware ``datetime`` (naive means UTC) or an ISO 8601
string (``"2026-03-29T06:59:00Z"``)."""

# advance() wakes a thread waiter whose deadline is this close: the deadline (the time read,
# plus a due time minus that time) may miss the due time by a rounding error. Waking early is
# harmless: the waiter checks its due time again, exactly.
_EPSILON = 1e-6


def _epoch(when: Instant) -> float:
    if isinstance(when, str):
        text = when.strip()
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ValueError(
                f"not an ISO 8601 time: {text!r} (e.g. '2026-03-29T06:59:00Z')"
            ) from None
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return float(when)
    raise TypeError(f"a time must be Unix seconds, a datetime or an ISO string, got {when!r}")


def _seconds(amount: Union[float, timedelta]) -> float:
    seconds = amount.total_seconds() if isinstance(amount, timedelta) else float(amount)
    if not seconds >= 0:
        raise ValueError(f"a clock only moves forward: advance({amount!r})")
    return seconds


class ManualClock:
    """Wall and monotonic time that move only when the test moves them.

    Starts at ``start`` (default :data:`DEFAULT_START`) with the monotonic clock at
    ``monotonic_start``. :meth:`advance` moves both and runs the fires of every
    :class:`ManualJobManager` on this clock as their due times come; :meth:`set` puts the
    wall clock elsewhere (to arrange a test); :meth:`step` moves the wall clock alone, as
    NTP does. A :class:`~bgjobs.local.LocalJobManager` (threads) may use it too: its timer
    thread waits through :meth:`wait`, so it wakes when ``advance`` passes a due time,
    never because real seconds passed. Due times are compared exactly: move by steps that
    floats hold exactly (1 s, 0.25 s; not 0.1 s) to land on them.
    """

    def __init__(self, start: Instant = DEFAULT_START, *, monotonic_start: float = 1000.0) -> None:
        # Guards _monotonic, _time, _moves, _sleepers and _queues. Never held while taking
        # a waiter's condition (a timer queue reads this clock with its condition held),
        # nor while a job runs.
        self._lock = threading.Lock()
        self._monotonic = float(monotonic_start)
        self._time = _epoch(start)
        self._moves = 0  # how often the monotonic clock moved
        self._sleepers: List[Tuple[float, threading.Condition]] = []  # (deadline, condition)
        self._seen = threading.local()  # per thread: _moves when it last read monotonic()
        self._queues: List[weakref.ref[_ManualTimers]] = []  # in the order they attached

    # -- reading ------------------------------------------------------------------------

    def monotonic(self) -> float:
        with self._lock:
            self._seen.moves = self._moves
            return self._monotonic

    def time(self) -> float:
        with self._lock:
            return self._time

    def now(self) -> datetime:
        """The wall clock as an aware UTC ``datetime``."""
        return utc_datetime(self.time())

    # -- moving -------------------------------------------------------------------------

    def advance(self, seconds: Union[float, timedelta]) -> int:
        """Move both clocks ``seconds`` ahead, stopping at every due time of the manual
        managers on this clock to run what is due there (in the caller's thread, in due
        order); return how many fires ran (retries included). A job may call it too (the
        run then lasts that long, and fires coming up meanwhile find the job running)."""
        with self._lock:
            target = self._monotonic + _seconds(seconds)
        fired = 0
        while True:
            upcoming = self._next_timer()
            with self._lock:
                remaining = target - self._monotonic
            if upcoming is None or upcoming[0] > remaining + _EPSILON:
                break
            self._move_to(upcoming[1])
            fired += self.run_due()
        with self._lock:
            remaining = max(0.0, target - self._monotonic)
        self._move(remaining)
        return fired + self.run_due()

    def run_due(self) -> int:
        """Run every fire of the manual managers on this clock that is due now, in due
        order, in the caller's thread; return how many ran. Fires missed while the clock
        jumped (:meth:`step`) are coalesced as in production: one run, the rest counted
        as skips."""
        fired = 0
        for queue in self._attached():
            fired += queue.run_due()
        return fired

    def set(self, when: Instant) -> None:
        """Put the wall clock at ``when`` (either way) to arrange a test: manual managers
        plan each cron job's next fire afresh from there; nothing runs and nothing counts
        as missed. Interval jobs keep their pace (they count on the monotonic clock, which
        does not move)."""
        epoch = _epoch(when)
        with self._lock:
            self._time = epoch
        for queue in self._attached():
            queue.replan()

    def step(self, seconds: float) -> None:
        """Move the wall clock alone (either way), like NTP. Nothing is re-planned and
        nobody is woken, as a real step wakes nobody: fires it made overdue run at the
        next :meth:`advance` or :meth:`run_due`."""
        with self._lock:
            self._time += seconds

    def _move(self, seconds: float) -> None:
        with self._lock:
            self._monotonic += seconds
            self._time += seconds
            self._moves += 1
        self._wake()

    def _move_to(self, handle: TimerHandle) -> None:
        """Move both clocks so that ``handle``'s due time is exactly now on its clock."""
        with self._lock:
            if handle.wall_clock:
                delta = handle.due - self._time
                if delta > 0:
                    self._time = handle.due
                    self._monotonic += delta
            else:
                delta = handle.due - self._monotonic
                if delta > 0:
                    self._monotonic = handle.due
                    self._time += delta
            if delta <= 0:
                return
            self._moves += 1
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            due = [c for deadline, c in self._sleepers if deadline <= self._monotonic + _EPSILON]
        for condition in due:
            with condition:  # the waiter is inside condition.wait() by now: see wait()
                condition.notify_all()

    # -- the manual managers' timers ---------------------------------------------------------

    def _attach(self, queue: _ManualTimers) -> None:
        with self._lock:
            self._queues.append(weakref.ref(queue))

    def _detach(self, queue: _ManualTimers) -> None:
        with self._lock:
            self._queues = [ref for ref in self._queues if ref() not in (None, queue)]

    def _attached(self) -> List[_ManualTimers]:
        with self._lock:
            queues = [ref() for ref in self._queues]
        return [queue for queue in queues if queue is not None]

    def _next_timer(self) -> Optional[Tuple[float, TimerHandle]]:
        """The earliest armed timer of any manual manager: (seconds until due, timer)."""
        best: Optional[Tuple[float, TimerHandle]] = None
        for queue in self._attached():
            upcoming = queue.earliest()
            if upcoming is not None and (best is None or upcoming[0] < best[0]):
                best = upcoming
        return best

    # -- what a LocalJobManager's timer thread uses ----------------------------------------

    def wait(self, condition: threading.Condition, timeout: float) -> None:
        """Block until ``condition`` is notified or :meth:`advance` has moved the monotonic
        clock ``timeout`` seconds on. Called with ``condition`` held (a timer queue's wait).

        Returns at once if the clock moved since this thread last read it: ``timeout`` was
        computed from that reading, so the caller must look again.
        """
        with self._lock:
            if getattr(self._seen, "moves", None) != self._moves:
                return
            entry = (self._monotonic + timeout, condition)
            self._sleepers.append(entry)
        try:
            # An advance() that wants to wake this thread needs `condition`, which is held
            # until wait() releases it: the notification cannot come too early.
            condition.wait()
        finally:
            with self._lock:
                self._sleepers.remove(entry)

    def sleepers(self) -> int:
        """Threads blocked in :meth:`wait` right now (for diagnostics)."""
        with self._lock:
            return len(self._sleepers)

    def __repr__(self) -> str:
        return f"<ManualClock {self.now().isoformat()} monotonic={self._monotonic!r}>"


class _ManualTimers(TimerQueue):
    """A :class:`~bgjobs._local.timers.TimerQueue` without threads: its clock's
    :meth:`~ManualClock.advance` and :meth:`~ManualClock.run_due` fire the timers in the
    caller's thread."""

    def __init__(self, clock: ManualClock, replan: Callable[[], None]) -> None:
        super().__init__(clock, max_workers=1)
        self._manual_clock = clock
        self._replan = replan
        # Guards _armed_timers and _closed; never held while a timer's callback runs.
        self._timers_lock = threading.Lock()
        self._armed_timers: List[Tuple[int, TimerHandle]] = []  # (arming order, timer)
        self._uncounted: Dict[int, TimerHandle] = {}  # id -> timer that is not a job's fire
        self._closed = False
        clock._attach(self)

    def call_at(
        self, due: float, wall_clock: bool, callback: Callable[..., None], *args: Any
    ) -> TimerHandle:
        handle = TimerHandle(due, wall_clock, callback, args)
        with self._timers_lock:
            if self._closed:
                raise RuntimeError("cannot arm a timer after the timer queue was shut down")
            self._armed_timers.append((next(self._seq), handle))
        return handle

    def call_at_uncounted(self, due: float, callback: Callable[[], None]) -> TimerHandle:
        """Arm a timer on the monotonic clock that :meth:`run_due` does not count as a fire
        (a run's timeout)."""
        handle = self.call_at(due, False, callback)
        with self._timers_lock:
            self._uncounted[id(handle)] = handle
        return handle

    def _until(self, handle: TimerHandle) -> float:
        clock = self._manual_clock
        return handle.due - (clock.time() if handle.wall_clock else clock.monotonic())

    def earliest(self) -> Optional[Tuple[float, TimerHandle]]:
        """The next timer to fire: (seconds until it is due, the timer); ``None`` if none."""
        with self._timers_lock:
            self._armed_timers = [e for e in self._armed_timers if not e[1].cancelled]
            timers = list(self._armed_timers)
        best: Optional[Tuple[float, int, TimerHandle]] = None
        for seq, handle in timers:
            until = self._until(handle)
            if best is None or (until, seq) < best[:2]:
                best = (until, seq, handle)
        return None if best is None else (best[0], best[2])

    def run_due(self) -> int:
        """Fire every timer due now, earliest due time first (ties: arming order)."""
        fired = 0
        while True:
            upcoming = self.earliest()
            if upcoming is None or upcoming[0] > 0:
                return fired
            handle = upcoming[1]
            with self._timers_lock:
                self._armed_timers = [e for e in self._armed_timers if e[1] is not handle]
                counted = self._uncounted.pop(id(handle), None) is None
            if handle.cancelled:
                continue
            handle.callback(*handle.args)
            fired += counted

    def uncount(self, handle: TimerHandle) -> None:
        """Forget ``handle`` (cancelled)."""
        with self._timers_lock:
            self._uncounted.pop(id(handle), None)

    def replan(self) -> None:
        """The clock was :meth:`~ManualClock.set`: the manager plans its fires afresh."""
        self._replan()

    def shutdown(self) -> None:
        with self._timers_lock:
            self._closed = True
            for _, handle in self._armed_timers:
                handle.cancel()
            self._armed_timers.clear()
            self._uncounted.clear()
        self._manual_clock._detach(self)

    def reinit_after_fork(self) -> None:
        self._timers_lock = threading.Lock()
        self._armed_timers = []
        self._uncounted = {}

    def pending(self) -> int:
        with self._timers_lock:
            return sum(1 for _, handle in self._armed_timers if not handle.cancelled)


class _ManualDeadlines(DeadlineWatcher):
    """Run timeouts as timers of the manual queue: a deadline passes, in the thread that
    moves the clock, exactly when :meth:`ManualClock.advance` passes it (no thread)."""

    def __init__(self, timers: _ManualTimers) -> None:
        super().__init__(timers._manual_clock)
        self._timers = timers
        # Guarded by _cond (the watcher's lock): each live deadline's timer.
        self._handles: Dict[int, TimerHandle] = {}

    def add(self, due: float, callback: Callable[[], None]) -> Deadline:
        deadline = Deadline(due, callback)

        def passed() -> None:
            with self._cond:
                self._handles.pop(id(deadline), None)
                if deadline.cancelled or deadline.fired:
                    return
                deadline.fired = True
            callback()

        handle = self._timers.call_at_uncounted(due, passed)
        with self._cond:
            self._handles[id(deadline)] = handle
        return deadline

    def cancel(self, deadline: Deadline) -> bool:
        live = super().cancel(deadline)
        with self._cond:
            handle = self._handles.pop(id(deadline), None)
        if handle is not None:
            handle.cancel()
            self._timers.uncount(handle)
        return live


class _CallingListeners(ListenerSet):
    """Listeners called at once, in the thread where the event happens (no thread)."""

    def emit(self, event: JobEvent, run: JobRun) -> None:
        targets = [e for e in self.entries if event in e[2]]
        if targets:
            self._deliver(run, event, targets)


class ManualJobManager(LocalJobManager):
    """The local runtime on a :class:`ManualClock`, its fires run by the test's own thread.

    ``clock`` (default: a new :class:`ManualClock`) is :attr:`clock`. Settings come from
    ``settings``/``env`` like a :class:`~bgjobs.local.LocalJobManager`'s
    (``BGJOBS_TIMEZONE`` applies), except the state directory: off — memory only, so no
    test shares state with another or with a running app — unless ``state_dir`` is given.
    """

    def __init__(
        self,
        clock: Optional[ManualClock] = None,
        *,
        env: Optional[Mapping[str, Any]] = None,
        settings: Optional[Settings] = None,
        state_dir: Union[str, os.PathLike[str], None] = None,
        store: Optional[StateStore] = None,
    ) -> None:
        if clock is None:
            clock = ManualClock()
        elif not isinstance(clock, ManualClock):
            raise TypeError(f"ManualJobManager needs a bgjobs.testing.ManualClock, got {clock!r}")
        self.clock = clock
        chosen = os.fspath(state_dir) if state_dir is not None else ""
        settings = Settings.coerce(settings, env).replace(state_dir=chosen)
        super().__init__(clock=clock, settings=settings, store=store)
        timers = self._timers
        assert isinstance(timers, _ManualTimers)
        self._deadlines = _ManualDeadlines(timers)
        self._listeners = _CallingListeners()

    def _timer_queue(self) -> TimerQueue:
        manager = weakref.ref(self)  # the clock holds the queue; the queue must not hold us

        def replan() -> None:
            live = manager()
            if live is not None:
                live._replan()

        return _ManualTimers(self.clock, replan)

    def run_due(self) -> int:
        """Run this manager's fires that are due now, in due order, in the caller's thread;
        return how many ran (:meth:`ManualClock.run_due` does it for every manager)."""
        timers = self._timers
        assert isinstance(timers, _ManualTimers)
        return timers.run_due()

    def load(self, app: Union[str, JobRegistry]) -> JobRegistry:
        """Schedule APP's jobs here and return its registry.

        ``app`` is a :class:`~bgjobs.registry.JobRegistry` or APP as the command line takes
        it (``"myapp.jobs"``, ``"myapp/jobs.py:jobs"``, a Flask app or factory with the
        ``BGJobs`` extension). For a Flask app every run happens inside its app context,
        and the jobs its extension may have started on real timers are stopped.
        """
        from .registry import JobRegistry

        if isinstance(app, JobRegistry):
            registry = app
        else:
            from ._cli.apps import load_app

            loaded = load_app(app)
            if loaded.manager is not None:
                loaded.manager.stop_all_jobs()
            if loaded.run_context is not None:
                self.set_run_context(loaded.run_context)
            registry = loaded.registry
        registry.apply(self)
        return registry

    def _replan(self) -> None:
        """After :meth:`ManualClock.set`: each cron's next fire from the new wall time; each
        interval's shown next run on the new wall clock (its due time does not move)."""
        for job in self._all_jobs():
            with self._armed_lock:
                handle = self._armed.get(job)
            if handle is None or handle.cancelled or job.schedule is None:
                continue
            if job.schedule.wall_clock:
                self._disarm(job)
                self._arm(job, job.schedule.first_due(self._now(job)))
            else:
                job.set_next_run(utc_datetime(round(self._to_wall(job, handle.due), 3)))
