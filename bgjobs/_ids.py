"""Run ids: 128 random bits as 32 hex digits, without a system call per id.

``os.urandom`` is a system call that releases the GIL; on a scheduled fire's path that
release cost more CPU (a hand-off among the pool's runnable workers) than the run's own
bookkeeping. A run id needs to be unique, not secret (reading a run needs the same access
as the runs endpoint itself), so ids come from a generator seeded with ``os.urandom`` once
per process, and again in a forked child, which must not repeat its parent's ids.
"""

from __future__ import annotations

import os
import random

__all__ = ["new_run_id"]

_random = random.Random(os.urandom(32))


def new_run_id() -> str:
    """A fresh run id: 32 lowercase hex digits."""
    return f"{_random.getrandbits(128):032x}"


def _reseed_in_child() -> None:
    _random.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reseed_in_child)
