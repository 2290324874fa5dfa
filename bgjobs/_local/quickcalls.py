"""System calls that return at once, made without releasing the GIL.

``fcntl.flock`` and ``os.pwrite`` release the GIL around the call, as every blocking call
must. For a call that cannot block — a non-blocking ``flock``, an unlock, a record of a
hundred bytes written into the page cache — that release is the expensive part: with the
pool's workers all runnable (a thousand jobs due in the same second), each release hands the
GIL to another thread and the caller queues to get it back, so every scheduled fire paid
tens of microseconds of CPU per lock-file call in context switches alone (see the README's
"State store overhead"). Here the same calls go through ``ctypes.PyDLL``, which keeps the
GIL, and raise the same exceptions (``BlockingIOError`` for a lock held elsewhere).

Where ``ctypes`` or the C library's symbols are missing, the standard functions serve.
"""

from __future__ import annotations

import errno
import os
from typing import Callable, Optional, Tuple

__all__ = ["flock_now", "pwrite_now"]


_Calls = Tuple[Callable[[int, int], int], Callable[[int, bytes, int, int], int], Callable[[], int]]


def _libc_calls() -> Optional[_Calls]:
    try:
        import ctypes

        libc = ctypes.PyDLL(None, use_errno=True)
        flock = libc.flock
        pwrite = libc.pwrite
    except (ImportError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return None
    flock.argtypes = [ctypes.c_int, ctypes.c_int]
    flock.restype = ctypes.c_int
    pwrite.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_longlong]
    pwrite.restype = ctypes.c_ssize_t
    return flock, pwrite, ctypes.get_errno


_calls = _libc_calls() if os.name == "posix" else None


def _raise(code: int) -> None:
    if code in (errno.EWOULDBLOCK, errno.EAGAIN):
        raise BlockingIOError(code, os.strerror(code))
    raise OSError(code, os.strerror(code))


def flock_now(fd: int, operation: int) -> None:
    """``fcntl.flock(fd, operation)`` for an ``operation`` that cannot wait: ``LOCK_UN``,
    or one with ``LOCK_NB``."""
    if _calls is None:
        import fcntl

        fcntl.flock(fd, operation)
        return
    flock, _, get_errno = _calls
    while flock(fd, operation) != 0:
        code = get_errno()
        if code != errno.EINTR:
            _raise(code)


def pwrite_now(fd: int, data: bytes, offset: int) -> int:
    """``os.pwrite(fd, data, offset)`` for a small write to a local file."""
    if _calls is None:
        return os.pwrite(fd, data, offset)
    _, pwrite, get_errno = _calls
    while True:
        written = pwrite(fd, data, len(data), offset)
        if written >= 0:
            return int(written)
        code = get_errno()
        if code != errno.EINTR:
            _raise(code)
