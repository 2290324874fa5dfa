"""TEMPORARY: the second-wave execution-core API the faces are written against.

``BaseJobManager.dispatch(id, *, run_key, trigger, background) -> DispatchResult``,
``get_run``, and the manager's ``get_job_runs``/``pause_job``/``resume_job`` are being
wired into the core on main (the "store wired" merge). Until then this module types
them as Protocols and builds a ``DispatchResult`` through whichever class exists, so that
the faces import, type-check and run the tests that do not need the new core. After
that merge, delete this module and import ``DispatchResult``/``DispatchOutcome`` from
:mod:`bgjobs.execution` in :mod:`bgjobs.wsgi` and :mod:`bgjobs.cli`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Literal, Optional, Protocol, cast

from .. import execution as _execution
from ..types import BackgroundJobManager, JobRun, JobStatus, RunTrigger

__all__ = [
    "Controls",
    "Core",
    "DispatchOutcome",
    "DispatchResult",
    "controls",
    "core",
    "core_dispatch",
    "make_result",
]

DispatchOutcome = Literal["ran", "busy", "stopped", "paused", "not_found", "accepted", "duplicate"]


class DispatchResult(Protocol):
    """What a dispatch did (``outcome``), the job's status afterwards and this run."""

    @property
    def outcome(self) -> DispatchOutcome: ...

    @property
    def status(self) -> Optional[JobStatus]: ...

    @property
    def run(self) -> Optional[JobRun]: ...


@dataclass(frozen=True)
class _Result:
    outcome: DispatchOutcome
    status: Optional[JobStatus]
    run: Optional[JobRun]


def make_result(
    outcome: DispatchOutcome, status: Optional[JobStatus], run: Optional[JobRun] = None
) -> DispatchResult:
    """A ``bgjobs.execution.DispatchResult`` once it exists, else a stand-in."""
    cls = getattr(_execution, "DispatchResult", _Result)
    return cast(DispatchResult, cls(outcome, status, run))


class Core(Protocol):
    """The execution core's dispatch and run lookup (:class:`~bgjobs.execution.BaseJobManager`)."""

    def dispatch(
        self,
        id: str,
        *,
        run_key: Optional[str] = None,
        trigger: RunTrigger = "http",
        background: bool = False,
    ) -> DispatchResult: ...

    def get_run(self, run_id: str) -> Optional[JobRun]: ...


class Controls(Protocol):
    """History and pause controls every :class:`BackgroundJobManager` gains."""

    def get_job_runs(self, id: str, limit: int = 20) -> List[JobRun]: ...

    def pause_job(self, id: str) -> None: ...

    def resume_job(self, id: str) -> None: ...


def controls(manager: BackgroundJobManager) -> Controls:
    """``manager`` typed with the history and pause controls."""
    return cast(Controls, manager)


def core(manager: _execution.BaseJobManager) -> Core:
    """``manager`` typed with the new dispatch and run lookup."""
    return cast(Core, manager)


def core_dispatch(
    manager: _execution.BaseJobManager,
    id: str,
    *,
    run_key: Optional[str],
    trigger: RunTrigger,
    background: bool,
) -> DispatchResult:
    """The new ``dispatch``; on the old core (it returns ``(outcome, status)``), that one,
    run in the calling thread, without a run record, refusing a ``run_key``."""
    if hasattr(_execution, "DispatchResult"):
        return core(manager).dispatch(id, run_key=run_key, trigger=trigger, background=background)
    if run_key is not None:
        raise NotImplementedError("run keys need the second-wave execution core")
    outcome, status = cast(Any, manager).dispatch(id)
    return make_result(outcome, status)
