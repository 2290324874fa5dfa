"""Ending a forked child from the thread it was forked on.

A job that calls ``os.fork()`` runs on a bgjobs thread (a pool worker, a dispatch thread),
and the child is left with that thread alone: Python makes it the child's main thread, but
the interpreter's own main code is not on it. When the job then calls ``sys.exit()`` in the
child, the exception unwinds into bgjobs' thread loop, not into the interpreter, which would
have exited; a pool worker would catch it and go on serving the parent's schedules in the
child, for ever. :func:`end_process_if_main_thread` does instead what the interpreter does
for a ``SystemExit`` on the main thread: run the ``atexit`` handlers, flush the standard
streams, and exit with the exception's status.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import Optional

__all__ = ["end_process_if_main_thread", "exit_status"]


def exit_status(exc: BaseException) -> int:
    """The exit status the interpreter gives ``exc`` on the main thread: ``SystemExit``'s
    code (``None`` is 0, an integer itself, anything else is printed and 1), and 130 for
    ``KeyboardInterrupt`` (128 + ``SIGINT``, as shells report it)."""
    if not isinstance(exc, SystemExit):
        return 130
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def end_process_if_main_thread(exc: BaseException) -> None:
    """If the calling thread is the process's main thread — a bgjobs thread only is, in a
    child forked on it — end the process as ``exc`` (``SystemExit``/``KeyboardInterrupt``)
    would on the interpreter's main thread. Otherwise return: on any other thread such an
    exception only ends that thread's work."""
    if threading.current_thread() is not threading.main_thread():
        return
    status: Optional[int] = None
    try:
        status = exit_status(exc)
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(1 if status is None else status)
