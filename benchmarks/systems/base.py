"""The one small interface every benchmarked scheduler is driven through."""

from __future__ import annotations

import abc
from typing import Callable, ClassVar, Optional

__all__ = ["STATE_PARENT_ENV", "JobFunc", "System"]

JobFunc = Callable[[], None]

STATE_PARENT_ENV = "BGJOBS_BENCH_STATE_PARENT"
"""Set by ``benchmarks.run`` for each child: where a system keeps its state directory. The
parent removes it after the child ended, so the removal never counts in its exit time."""


class System(abc.ABC):
    """A scheduler under test, already running once constructed.

    Capabilities are class attributes so the harness can explain a ``n/a`` in the table.
    """

    #: Name used on the command line and in the table.
    name: ClassVar[str]
    #: A tick that finds the job still running is skipped instead of running it twice.
    overlap_protection: ClassVar[bool] = False
    #: :meth:`skips` returns a count of such skipped ticks.
    reports_skips: ClassVar[bool] = False
    #: How the system anchors an interval job's fire times (documented in the README).
    grid: ClassVar[str] = ""

    @abc.abstractmethod
    def add_interval_job(self, job_id: str, seconds: float, func: JobFunc) -> None:
        """Run ``func`` every ``seconds``, first run one interval from now."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every job with the system's default stop call (no runs may start after)."""

    def skips(self) -> Optional[int]:
        """Ticks skipped because the job was still running, if the system reports them."""
        return None

    def own_due(self, job_id: str) -> Optional[float]:
        """Called from inside a run: the ``time.monotonic()`` instant the system itself
        intended this run for, when it exposes one and it differs from the ideal grid."""
        return None
