"""Run ids: 32 hex digits, time-ordered, without a system call per id.

The first 12 digits are the creation time in milliseconds and the other 20 are random (the
layout of a UUIDv7): ids sort by creation, and the state store's index of run ids grows at
one end instead of taking every insert at a random page (a page written per run).

``os.urandom`` is a system call that releases the GIL; on a scheduled fire's path that
release cost more CPU (a hand-off among the pool's runnable workers) than the run's own
bookkeeping. A run id needs to be unique, not secret (reading a run needs the same access
as the runs endpoint itself), so ids come from a generator seeded with ``os.urandom`` once
per process, and again in a forked child, which must not repeat its parent's ids.
"""

from __future__ import annotations

import os
import random
import time

__all__ = ["new_run_id"]

_random = random.Random(os.urandom(32))


def new_run_id() -> str:
    """A fresh run id: 32 lowercase hex digits, the first 12 the time in milliseconds."""
    # Under a frozen clock (freezegun) the time part stands still: the 80 random bits
    # alone keep ids unique.
    return f"{int(time.time() * 1000) & _MS_MASK:012x}{_random.getrandbits(80):020x}"


_MS_MASK = (1 << 48) - 1


def _reseed_in_child() -> None:
    _random.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_reseed_in_child)
