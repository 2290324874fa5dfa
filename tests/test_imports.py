"""The import graph of bgjobs: no cycles, no runtime that knows a face, cheap web imports.

The faces are what users run bgjobs through: the HTTP endpoints (``bgjobs.wsgi``,
``bgjobs._web``), the Flask extension (``bgjobs.flask``) and the command line
(``bgjobs.cli``, ``bgjobs.__main__``, ``bgjobs._cli``). Everything else — the core and the
runtimes (``local``, ``vercel``, ``triggerdev``, ``noop`` and their private packages) — sits
below them. The rules, each a test below:

* no cycle among bgjobs modules through module-level imports; an import inside a function
  (or under ``if TYPE_CHECKING:``) is the sanctioned way to defer a dependency and does not
  count here — except among the faces, which depend on each other one way only, deferred
  imports included (``apps``, ``cli`` and ``flask`` once imported each other that way);
* no module below the faces imports a face, at module level, in a function or for type
  checking alike;
* importing a web face loads neither the command line nor the local, Vercel or Trigger.dev
  runtimes (checked in a fresh interpreter);
* ``import bgjobs`` loads no submodule, nor ``requests`` or ``croniter``.

Module names are matched by what they contain as well ("local", "timers", "hostlock"), so
the rules hold whether the local runtime's helpers live at the top or in ``bgjobs._local``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
from support_cli import REPO, cli_env

PACKAGE = REPO / "bgjobs"

FACES = (
    "bgjobs.wsgi",
    "bgjobs.flask",
    "bgjobs.cli",
    "bgjobs.__main__",
    "bgjobs._cli",
    "bgjobs._web",
    "bgjobs.testing",
    "bgjobs.pytest_plugin",
)
"""Modules (and packages, with everything in them) users run bgjobs through."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Dict[str, Path] = {
    _module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "__pycache__" not in path.parts
}


def _is_under(module: str, prefixes: Tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _is_face(module: str) -> bool:
    return _is_under(module, FACES)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    deferred: bool
    """Inside a function or under ``if TYPE_CHECKING:``: not run when the module loads."""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.AST) -> Iterator[str]:
    """The bgjobs modules an import statement in ``module`` loads (by name)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if _is_under(alias.name, ("bgjobs",)):
                yield alias.name
        return
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if not _is_under(base, ("bgjobs",)):
        return
    # `from bgjobs._local import timers` loads the submodule; `from .config import X`, the module.
    submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    yield from submodules
    if len(submodules) < len(node.names):
        yield base


def _imports(module: str) -> List[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), str(MODULES[module]))
    found: List[Import] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(module, node):
                found.append(Import(module, target, node.lineno, deferred))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit(statement, True)
                for statement in child.orelse:
                    visit(statement, deferred)
            else:
                visit(child, deferred)

    visit(tree, False)
    return found


IMPORTS: List[Import] = [imp for module in MODULES for imp in _imports(module)]


def _cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module, or a self-import."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_the_scan_sees_the_package() -> None:
    assert {"bgjobs", "bgjobs.cli", "bgjobs.flask", "bgjobs.wsgi", "bgjobs.execution"} <= set(
        MODULES
    )
    edges = {(i.source, i.target) for i in IMPORTS}
    assert ("bgjobs.flask", "bgjobs.wsgi") in edges
    assert ("bgjobs.cli", "bgjobs.registry") in edges
    assert any(i.source == "bgjobs.factory" and i.deferred for i in IMPORTS)  # lazy runtimes
    assert _cycles({"a": {"b"}, "b": {"a", "c"}, "c": set(), "d": {"d"}}) == [["a", "b"], ["d"]]


def test_bgjobs_modules_import_each_other_without_cycles() -> None:
    edges: Dict[str, Set[str]] = {}
    for imp in IMPORTS:
        if not imp.deferred and imp.target in MODULES:
            edges.setdefault(imp.source, set()).add(imp.target)
    cycles = _cycles(edges)
    described = [
        " <-> ".join(c)
        + ": "
        + ", ".join(
            f"{i.source} imports {i.target} (line {i.line})"
            for i in IMPORTS
            if not i.deferred and i.source in c and i.target in c
        )
        for c in cycles
    ]
    assert not cycles, "import cycles (defer one import into a function): " + "; ".join(described)


def test_the_faces_depend_on_each_other_one_way_even_through_deferred_imports() -> None:
    edges: Dict[str, Set[str]] = {}
    for imp in IMPORTS:
        if _is_face(imp.source) and _is_face(imp.target) and imp.target in MODULES:
            edges.setdefault(imp.source, set()).add(imp.target)
    assert not _cycles(edges), f"faces importing each other both ways: {_cycles(edges)}"
    assert "bgjobs.cli" in edges["bgjobs._cli.flask_commands"]  # deferred imports were seen


def test_nothing_below_a_face_imports_a_face() -> None:
    below = [m for m in MODULES if not _is_face(m) and m != "bgjobs"]
    assert {"bgjobs.local", "bgjobs.vercel", "bgjobs.triggerdev", "bgjobs.noop"} <= set(below)
    wrong = [
        f"{i.source} imports {i.target} (line {i.line}{', deferred' if i.deferred else ''})"
        for i in IMPORTS
        if i.source in below and _is_face(i.target)
    ]
    assert not wrong, "a runtime or core module imports a face: " + "; ".join(wrong)


def _loaded_after(statement: str) -> Tuple[List[str], List[str]]:
    """The bgjobs modules, and the third-party ones of interest, a fresh Python has loaded
    after running ``statement``."""
    code = (
        f"import sys\n{statement}\n"
        "import json\n"
        "ours = sorted(m for m in sys.modules if m == 'bgjobs' or m.startswith('bgjobs.'))\n"
        "theirs = sorted(m for m in ('requests', 'croniter') if m in sys.modules)\n"
        "print(json.dumps([ours, theirs]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    ours, theirs = json.loads(result.stdout.splitlines()[-1])
    return ours, theirs


def _is_cli_or_runtime(module: str) -> bool:
    if _is_under(module, ("bgjobs.cli", "bgjobs._cli", "bgjobs.__main__", "bgjobs.vercel")):
        return True
    leaf = module[len("bgjobs.") :]
    return any(word in leaf for word in ("local", "timers", "hostlock", "triggerdev"))


@pytest.mark.parametrize("face", ["bgjobs.flask", "bgjobs.wsgi"])
def test_a_web_face_loads_no_command_line_and_no_runtime(face: str) -> None:
    pytest.importorskip("flask")
    loaded, _ = _loaded_after(f"import {face}")
    assert face in loaded
    assert not [m for m in loaded if _is_cli_or_runtime(m)], loaded


def test_the_flask_command_plugin_loads_the_command_line_only_when_used() -> None:
    # Flask loads every flask.commands entry point for any `flask` command, `flask run` too.
    pytest.importorskip("flask")
    loaded, _ = _loaded_after("import bgjobs._cli.flask_commands")
    assert [m for m in loaded if _is_cli_or_runtime(m)] == [
        "bgjobs._cli",
        "bgjobs._cli.flask_commands",
    ]


def test_import_bgjobs_loads_no_submodule_nor_requests_or_croniter() -> None:
    assert _loaded_after("import bgjobs") == (["bgjobs"], [])
