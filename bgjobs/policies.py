"""Per-job policies: ``timeout``, ``retries``/``retry_backoff``, ``misfire_grace``, ``jitter``.

Every scheduling call (``schedule_job``, ``schedule_cron_job``, ``schedule_once`` and the
registry decorators) takes them as keywords; :func:`make_policy` checks them once, at
declaration, and returns ``None`` when none is set, so a job without policies costs the
execution core nothing but an ``is None`` test.

The maths is pure and lives here: the retry delays (doubling from ``retry_backoff``,
jittered so a fleet of failing jobs does not retry in lockstep) and the jitter of a fire
(a fixed fraction of ``jitter`` derived from the job id and the due time, so it is the
same on every run of the test suite and under a manual clock, yet spread across jobs).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional, Union

from .errors import InvalidScheduleError

__all__ = [
    "DEFAULT_RETRY_BACKOFF",
    "MAX_RETRY_DELAY",
    "JobPolicy",
    "check_seconds",
    "make_policy",
]

DEFAULT_RETRY_BACKOFF = 1.0
"""Seconds before the first retry when ``retry_backoff`` is not given."""

MAX_RETRY_DELAY = 3600.0
"""No retry waits longer than this, however many doublings."""

Seconds = Union[int, float, timedelta]
"""A duration in seconds, or a :class:`datetime.timedelta`."""


@dataclass(frozen=True)
class JobPolicy:
    """The policies of one job; see the README's "Policies" for each one's rules."""

    timeout: Optional[float] = None
    """Seconds a run may take before it is flagged ``timed_out`` (never killed)."""
    retries: int = 0
    """How many times a failed scheduled run is tried again."""
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    """Seconds before the first retry; each further retry waits twice as long."""
    misfire_grace: Optional[float] = None
    """A fire later than this many seconds is skipped and counted; ``None``: always run."""
    jitter: float = 0.0
    """Each fire happens up to this many seconds after its due time."""

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``, after attempt ``attempt`` failed:
        ``retry_backoff * 2 ** (attempt - 1)`` (at most :data:`MAX_RETRY_DELAY`), less a
        random part of up to half of it. Never more than the doubled value, so a test
        that advances a manual clock by that much always sees the retry."""
        import random  # only jobs that retry pay for it

        delay = min(MAX_RETRY_DELAY, self.retry_backoff * 2.0 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)  # spreading, not security

    def jitter_offset(self, job_id: str, due: float) -> float:
        """Seconds after ``due`` that the fire of ``job_id`` due then happens, in
        ``[0, jitter)``: derived from both, so it is deterministic yet differs per fire."""
        if not self.jitter:
            return 0.0
        seed = zlib.crc32(f"{job_id}@{due:.3f}".encode())
        return self.jitter * (seed / 2**32)


def check_seconds(job_id: str, keyword: str, value: object, *, positive: bool) -> float:
    """``value`` (seconds or a timedelta) as float seconds, or an error naming the job."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"job {job_id!r}: {keyword} must be seconds (a number or a timedelta), got {value!r}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidScheduleError(
            f"job {job_id!r}: {keyword} must be a finite number of seconds {bound}, got {value!r}"
        )
    return seconds


def make_policy(
    job_id: str,
    *,
    timeout: Optional[Seconds] = None,
    retries: int = 0,
    retry_backoff: Optional[Seconds] = None,
    misfire_grace: Optional[Seconds] = None,
    jitter: Optional[Seconds] = None,
) -> Optional[JobPolicy]:
    """Check the policy keywords of ``job_id``; ``None`` when none is set (no policy).

    Bad values raise :class:`TypeError` or :class:`~bgjobs.errors.InvalidScheduleError`
    naming the job, the keyword and the value.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidScheduleError(
            f"job {job_id!r}: retries must be a whole number >= 0, got {retries!r}"
        )
    policy = JobPolicy(
        timeout=None
        if timeout is None
        else check_seconds(job_id, "timeout", timeout, positive=True),
        retries=retries,
        retry_backoff=(
            DEFAULT_RETRY_BACKOFF
            if retry_backoff is None
            else check_seconds(job_id, "retry_backoff", retry_backoff, positive=False)
        ),
        misfire_grace=(
            None
            if misfire_grace is None
            else check_seconds(job_id, "misfire_grace", misfire_grace, positive=False)
        ),
        jitter=0.0 if jitter is None else check_seconds(job_id, "jitter", jitter, positive=False),
    )
    return None if policy == _NO_POLICY else policy


_NO_POLICY = JobPolicy()
