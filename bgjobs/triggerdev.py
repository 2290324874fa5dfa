"""The ``trigger-dev`` runtime (work in progress)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from .execution import ManagedJobs
from .types import TriggerDevConfig

__all__ = ["TriggerDevJobManager"]


class TriggerDevJobManager(ManagedJobs):
    """Placeholder until the Trigger.dev runtime lands."""

    def __init__(
        self,
        config: Optional[TriggerDevConfig] = None,
        *,
        task_id: Optional[str] = None,
        env: Optional[Mapping[str, Any]] = None,
    ) -> None:
        raise NotImplementedError("the trigger-dev mode is not implemented yet")
