"""What a job can learn about the run it is in: :func:`current_run`.

::

    import bgjobs

    @jobs.interval("export", "Export", minutes=5, timeout=60)
    def export():
        run = bgjobs.current_run()
        for batch in batches():
            if run.cancelled.is_set():   # past its timeout, or the manager is shutting down
                return
            write(batch)

bgjobs never kills a thread (Python cannot do it safely): a run past its ``timeout`` is
flagged ``timed_out`` and asked to stop through ``cancelled``; a job that never looks
runs on, and keeps its overlap lock until it really ends.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Optional

from ._deadlines import Deadline
from .types import JobRun

__all__ = ["ActiveRun", "current_run"]


@dataclass(frozen=True)
class ActiveRun(JobRun):
    """The :class:`~bgjobs.types.JobRun` going on now, as it began, plus ``cancelled``."""

    cancelled: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    """Set when the run passes its ``timeout`` and when its manager shuts down (``close``,
    ``shutdown``, interpreter exit): a cooperative job checks it and returns early."""


# Guards the lazy creation of every RunHandle's event (rare: most runs never ask for it).
_event_lock = threading.Lock()


class RunHandle:
    """The execution core's side of one run in progress: what cancels it and what
    :func:`current_run` shows. The event is made only when someone needs it, so a run
    nobody asks about costs no :class:`threading.Event`."""

    __slots__ = ("_active", "_event", "deadline", "job_id", "run", "timed_out")

    run: JobRun  # set once the run has begun, before the job is called

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.timed_out = False  # the run passed its timeout (set by the deadline watcher)
        self.deadline: Optional[Deadline] = None  # the deadline watcher's entry, if any
        self._event: Optional[threading.Event] = None
        self._active: Optional[ActiveRun] = None

    @property
    def cancelled(self) -> threading.Event:
        event = self._event
        if event is None:
            with _event_lock:
                if self._event is None:
                    self._event = threading.Event()
                event = self._event
        return event

    def cancel(self) -> None:
        """Ask the run to stop (it decides whether to)."""
        self.cancelled.set()

    def active(self) -> ActiveRun:
        active = self._active
        if active is None:
            run = self.run
            active = ActiveRun(**{name: getattr(run, name) for name in _RUN_FIELDS})
            object.__setattr__(active, "cancelled", self.cancelled)
            self._active = active
        return active


_RUN_FIELDS = tuple(JobRun.__dataclass_fields__)

CURRENT: ContextVar[Optional[RunHandle]] = ContextVar("bgjobs_current_run", default=None)
"""The run the calling code is part of (set by the execution core around the job call)."""


def current_run() -> Optional[ActiveRun]:
    """The run the calling job is in, with its ``cancelled`` event; ``None`` outside a run.

    Works in the job's own thread and in an ``async def`` job (the context is copied into
    its event loop); a thread the job starts itself has its own context (pass the run on).
    """
    handle = CURRENT.get()
    return None if handle is None else handle.active()
