"""The systems under test, each in its own module, loaded only in the child that runs it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict

from .base import JobFunc, System

__all__ = ["DEFAULT_SYSTEMS", "SYSTEMS", "JobFunc", "System", "SystemSpec", "load_system"]


@dataclass(frozen=True)
class SystemSpec:
    """Where a system's adapter lives, and what importing the library means for it."""

    module: str
    cls: str
    #: The statement whose import cost the ``import`` scenario measures.
    import_statement: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    #: What a user actually imports to use it, when that costs more than ``import_statement``.
    use_statement: str = ""


SYSTEMS: Dict[str, SystemSpec] = {
    "bgjobs": SystemSpec(
        "bgjobs_local",
        "BGJobsSystem",
        "import bgjobs",
        use_statement="from bgjobs import LocalJobManager",
    ),
    "bgjobs-store": SystemSpec(
        "bgjobs_local",
        "BGJobsStoreSystem",
        "import bgjobs",
        use_statement="from bgjobs import LocalJobManager",
    ),
    "apscheduler": SystemSpec(
        "apscheduler_bg",
        "APSchedulerSystem",
        "from apscheduler.schedulers.background import BackgroundScheduler",
    ),
    "schedule-1ms": SystemSpec(
        "schedule_poll", "SchedulePollSystem", "import schedule", {"poll": 0.001}
    ),
    "schedule-10ms": SystemSpec(
        "schedule_poll", "SchedulePollSystem", "import schedule", {"poll": 0.010}
    ),
    "timer-chain": SystemSpec("timer_chain", "TimerChainSystem", "import threading"),
}
"""Every system, in table order; bgjobs first."""

DEFAULT_SYSTEMS = [
    "bgjobs",
    "bgjobs-store",
    "apscheduler",
    "schedule-1ms",
    "schedule-10ms",
    "timer-chain",
]
"""What ``benchmarks.run`` compares unless ``--systems`` says otherwise."""


def load_system(name: str) -> System:
    """Import the adapter for ``name`` (and so its library) and start the system."""
    spec = SYSTEMS[name]
    module = importlib.import_module(f"{__name__}.{spec.module}")
    system: System = getattr(module, spec.cls)(**spec.kwargs)
    return system
