"""tox plugin, loaded by tox itself from this file: find pyenv's interpreters off PATH.

tox looks for ``py39`` .. ``py313`` as ``python3.9`` .. ``python3.13`` on PATH, where pyenv's
shims run only the versions currently selected. This appends the ``bin`` of every CPython that
pyenv installed (under ``$PYENV_ROOT``, else ``~/.pyenv``; newest release first) to the end of
tox's PATH, so an interpreter already on PATH still wins and the ``pyenv`` command is not needed.
A version installed nowhere is still missing: tox fails that environment, naming it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from tox.plugin import impl

if TYPE_CHECKING:
    from tox.config.sets import ConfigSet
    from tox.session.state import State

_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")  # a CPython release; not pypy, -dev or a virtualenv


def pyenv_bin_dirs() -> list[str]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    try:
        names = os.listdir(root / "versions")
    except OSError:  # no pyenv here
        return []
    releases = sorted(
        ((tuple(map(int, m.groups())), name) for name in names if (m := _RELEASE.fullmatch(name))),
        reverse=True,
    )
    return [str(root / "versions" / name / "bin") for _, name in releases]


@impl
def tox_add_core_config(core_conf: ConfigSet, state: State) -> None:
    path = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    extra = [entry for entry in pyenv_bin_dirs() if entry not in path]
    if extra:
        os.environ["PATH"] = os.pathsep.join(path + extra)
