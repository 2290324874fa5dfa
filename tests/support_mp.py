"""Helpers for tests with real processes: scripts, gunicorn, os.fork, bounded polling.

Every wait is bounded; every process started here is killed (its whole process group)
when the test ends, passed or not.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

import bgjobs

APPS = Path(__file__).resolve().parent / "apps"
# The directory bgjobs was imported from: child processes import the same code.
BGJOBS_ROOT = str(Path(bgjobs.__file__).resolve().parent.parent)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true (``True``) or ``timeout`` seconds pass (``False``)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def child_env(**extra: str) -> Dict[str, str]:
    """The environment for a child Python: this bgjobs and tests/apps importable, no
    BGJOBS_* settings inherited from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGJOBS_")}
    path = [str(APPS), BGJOBS_ROOT]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Line(NamedTuple):
    """One line an app wrote: ``<pid> <time> [event [next due]]``."""

    pid: int
    time: float
    event: str
    next_due: Optional[float]


def read_lines(path: Path) -> List[Line]:
    """The complete lines of ``path`` (a line still being written is left out)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = []
    for raw in text.splitlines(keepends=True):
        if not raw.endswith("\n"):
            break
        fields = raw.split()
        event = fields[2] if len(fields) > 2 else ""
        nxt = float(fields[3]) if len(fields) > 3 and fields[3] != "-" else None
        lines.append(Line(int(fields[0]), float(fields[1]), event, nxt))
    return lines


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc``'s whole process group (it was started in a session of its own)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):  # the kernel reaps SIGKILLed processes
        proc.wait(timeout=10)


@contextmanager
def python_script(
    script: str, *args: str, env: Optional[Dict[str, str]] = None, log: Optional[Path] = None
) -> Iterator[subprocess.Popen[str]]:
    """Start ``tests/apps/<script>`` in a new session; stdout is a pipe, stderr goes to
    ``log`` (or is discarded). The process group is killed on the way out."""
    stderr = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(APPS / script), *args],
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        kill_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        if log is not None:
            stderr.close()  # type: ignore[union-attr]


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line ``proc`` prints, waiting at most ``timeout`` seconds ("" on EOF)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output from pid {proc.pid} within {timeout}s")
    return proc.stdout.readline().strip()


class Gunicorn:
    """A running gunicorn: its master process and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def master_pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def booted_workers(self) -> List[int]:
        """Pids of every worker booted so far (from the log), in boot order."""
        marker = "Booting worker with pid: "
        return [
            int(line.split(marker, 1)[1].split()[0])
            for line in self.log_text().splitlines()
            if marker in line
        ]


@contextmanager
def gunicorn(
    tmp_path: Path,
    app: str,
    *,
    env: Dict[str, str],
    workers: int = 4,
    preload: bool = False,
) -> Iterator[Gunicorn]:
    """Serve ``app`` (``module:callable`` from tests/apps) with real sync workers on a unix
    socket in ``tmp_path``; the whole process group is SIGKILLed on the way out."""
    sock = tmp_path / "gunicorn.sock"
    conf = tmp_path / "gunicorn_conf.py"
    # A config file rather than flags: settings an older gunicorn lacks are ignored there.
    conf.write_text(
        textwrap.dedent(
            f"""
            bind = "unix:{sock}"
            workers = {workers}
            worker_class = "sync"
            preload_app = {preload!r}
            graceful_timeout = 20
            timeout = 60
            loglevel = "info"
            pythonpath = {str(APPS) + "," + BGJOBS_ROOT!r}
            control_socket_disable = True
            """
        )
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(conf), app],
            env=child_env(**env),
            cwd=str(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Gunicorn(proc, log)
    try:
        if not wait_for(lambda: len(server.booted_workers()) >= workers, 30):
            raise AssertionError(f"gunicorn did not boot {workers} workers:\n{server.log_text()}")
        yield server
    finally:
        kill_group(proc)


_fork_watchers: List[threading.Event] = []


def _after_fork_in_parent() -> None:
    for event in list(_fork_watchers):
        event.set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_parent=_after_fork_in_parent)


@contextmanager
def forked_event() -> Iterator[threading.Event]:
    """An Event set in this process right after its next ``os.fork()`` (by any thread)."""
    event = threading.Event()
    _fork_watchers.append(event)
    try:
        yield event
    finally:
        _fork_watchers.remove(event)


def fork_and_report(child: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Fork; run ``child()`` in the child and return its (JSON-able) result here.

    The child never returns into the caller (it leaves with ``os._exit``). A child that
    raises re-raises here with its traceback; one that hangs (a deadlock) is killed and
    fails the test after ``timeout`` seconds.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            try:
                payload = {"ok": child()}
                code = 0
            except BaseException:
                payload = {"error": traceback.format_exc()}
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(write_fd, data) :]
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: List[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(0.0, remaining))
            if not ready:
                raise AssertionError(f"forked child {pid} hung for {timeout}s (deadlock?)")
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _reap(pid)
    result = json.loads(b"".join(chunks) or b'{"error": "child died without a report"}')
    if "error" in result:
        raise AssertionError(f"forked child failed:\n{result['error']}")
    return result["ok"]


def _reap(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
