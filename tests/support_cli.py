"""Helpers for the command-line tests: ``python -m bgjobs`` in real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

_FOREIGN_SETTINGS = ("BGJOBS_", "TRIGGER_", "CRON_SECRET", "VERCEL", "APP_ENV", "NO_COLOR")


def cli_env(**extra: str) -> Dict[str, str]:
    """The environment for a CLI subprocess: this checkout's bgjobs first on the path, and
    no bgjobs/Trigger.dev/Vercel settings leaking in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_SETTINGS)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli_command(*args: str) -> List[str]:
    return [sys.executable, "-m", "bgjobs", *args]


def run_cli(
    *args: str, cwd: Path, env: Optional[Dict[str, str]] = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bgjobs ARGS`` to completion, capturing its output."""
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env=env if env is not None else cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class LineReader:
    """Collects a pipe's lines on a thread, so a test can wait for one without blocking."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: List[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def join(self, timeout: float = 10) -> str:
        self._thread.join(timeout)
        return self.text


def start_cli(
    *args: str, cwd: Path, env: Optional[Dict[str, str]] = None
) -> Tuple[subprocess.Popen[str], LineReader, LineReader]:
    """Start ``python -m bgjobs ARGS``; returns the process and readers of stdout and stderr."""
    proc = subprocess.Popen(
        cli_command(*args),
        cwd=cwd,
        env=env if env is not None else cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    return proc, LineReader(proc.stdout), LineReader(proc.stderr)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(0.02)
    return True


def write_app(directory: Path, source: str, name: str = "app.py") -> Path:
    """Write a registry module (dedented) and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def flask_cli_runner(app: Any) -> Any:
    """A test runner of the ``flask`` command on ``app``, with stdout and stderr kept apart
    (click < 8.2, the last for Python 3.9, mixes them unless told not to; click 8.2 dropped
    the option).

    ``app.test_cli_runner()`` alone runs ``app.cli``, which lacks the commands Flask adds
    from ``flask.commands`` entry points, ``flask bgjobs`` among them; this runner's
    ``invoke`` runs a ``flask`` command (a :class:`flask.cli.FlaskGroup`) instead.
    """
    from flask.cli import FlaskGroup
    from flask.testing import FlaskCliRunner

    class FlaskCommandRunner(FlaskCliRunner):
        def invoke(self, cli: Any = None, args: Any = None, **kwargs: Any) -> Any:
            if cli is None:
                cli = FlaskGroup(add_default_commands=False, load_dotenv=False)
            # FlaskGroup sets FLASK_RUN_FROM_CLI (app.run becomes a no-op) and leaves it
            # set; the runner restores the variables given in env afterwards.
            env = kwargs.setdefault("env", {})
            env.setdefault("FLASK_RUN_FROM_CLI", os.environ.get("FLASK_RUN_FROM_CLI"))
            return super().invoke(cli, args, **kwargs)

    try:
        return FlaskCommandRunner(app, mix_stderr=False)
    except TypeError:
        return FlaskCommandRunner(app)
