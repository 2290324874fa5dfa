"""The exceptions bgjobs raises.

The tree is small on purpose, so that ``except BGJobsError`` catches everything the
library itself raises while each leaf still behaves like the builtin a caller expects::

    BGJobsError
    ├── JobNotFoundError        (also a KeyError)
    ├── InvalidScheduleError    (also a ValueError)
    ├── UnsafeLockDirError      (also a PermissionError)
    ├── TriggerDevError         (status, message, path; never the API key)
    ├── AppLoadError            the command line's APP names no jobs (bgjobs.apps)
    └── UsageError              another mistake on the command line (unknown job...)

Bad arguments that are not schedules (an empty id, a job that is not callable) raise
plain ``ValueError``/``TypeError``, as Python's own APIs do.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "AppLoadError",
    "BGJobsError",
    "InvalidScheduleError",
    "JobNotFoundError",
    "TriggerDevError",
    "UnsafeLockDirError",
    "UsageError",
]


class BGJobsError(Exception):
    """Root of every exception raised by bgjobs itself."""


class JobNotFoundError(BGJobsError, KeyError):
    """No job with this id is known to the manager."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the argument; a sentence reads better.
        return f"no job with id {self.job_id!r} is scheduled on this manager"


class InvalidScheduleError(BGJobsError, ValueError):
    """An interval, cron expression or timezone that cannot be scheduled.

    The message names the job, the bad value and the accepted form.
    """


class UnsafeLockDirError(BGJobsError, PermissionError):
    """The lock directory could let another user interfere with bgjobs' locks."""


class TriggerDevError(BGJobsError):
    """A Trigger.dev API call failed.

    ``status`` is the HTTP status (``None`` for a network error or timeout), ``message``
    the server's explanation, ``path`` the request path. The API key is never included.
    """

    def __init__(self, message: str, *, status: Optional[int] = None, path: str = "") -> None:
        super().__init__(message, status, path)
        self.message = message
        self.status = status
        self.path = path

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        code = f"HTTP {self.status}: " if self.status is not None else ""
        return f"Trigger.dev request failed{where}: {code}{self.message}"


class AppLoadError(BGJobsError):
    """APP (``pkg.module``, ``module:attribute``, a ``.py`` file) names no jobs to run.

    Raised by :func:`bgjobs.apps.load_app` for every user mistake, including an exception
    raised while importing APP. The message is one line and says the accepted forms.
    """


class UsageError(BGJobsError):
    """A mistake on the command line other than APP: an unknown job id, a bad setting.

    The message is one line; the command line prints it and exits 2.
    """
