"""Every Python example of the README's "Testing your jobs" guide runs, as written, in a
fresh project (pytester, a subprocess) that has only bgjobs installed: files the guide names
(``# myapp/jobs.py``) are written there, its test modules are collected by pytest with the
plugin's fixtures, and every other example runs as a script."""

from __future__ import annotations

import re
from typing import List, Tuple

import pytest
from support_cli import REPO

SECTION = "## Testing your jobs"


def guide_examples() -> List[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + len(SECTION) + 2)
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.M | re.S)


def plugin_installed() -> bool:
    from importlib.metadata import entry_points

    found = entry_points()
    group = (
        found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", [])  # type: ignore[attr-defined]  # Python 3.9
    )
    return any(ep.value == "bgjobs.pytest_plugin" for ep in group)


def split(examples: List[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """(path, source) of the files the guide names, and the examples that are scripts."""
    files, scripts = [], []
    for source in examples:
        first = source.splitlines()[0]
        named = re.fullmatch(r"# ([\w/]+\.py)", first)
        if named:
            files.append((named.group(1), source))
        else:
            scripts.append(source)
    return files, scripts


def test_the_guide_has_the_examples_the_issue_asks_for() -> None:
    files, scripts = split(guide_examples())
    assert [path for path, _ in files] == ["myapp/jobs.py", "tests/test_jobs.py"]
    tests = files[1][1]
    assert "def test_reminders_go_out_at_nine(bgjobs_manager, bgjobs_clock):" in tests
    assert 'bgjobs_clock.set("2026-03-29T06:59:00Z"); bgjobs_clock.advance(60)' in tests
    assert any("freeze_time" in s for s in scripts)
    assert any('("2026-03-28T22:59:59Z", 23, 92)' in s for s in scripts)
    assert any("jobs.check(mode=" in s for s in scripts)


def test_every_example_of_the_guide_runs(pytester: pytest.Pytester) -> None:
    files, scripts = split(guide_examples())
    for path, source in files:
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
    (pytester.path / "myapp" / "__init__.py").write_text("", encoding="utf-8")
    runner = ["import runpy", "import pytest", ""]
    for n, source in enumerate(scripts):
        (pytester.path / f"example_{n}.py").write_text(source, encoding="utf-8")
        runner += [
            f"def test_example_{n}():",
            f"    runpy.run_path('example_{n}.py', run_name='__main__')",
            "",
        ]
    (pytester.path / "tests" / "test_guide_scripts.py").write_text(
        "\n".join(runner), encoding="utf-8"
    )
    pytester.makeini("[pytest]\npythonpath = .\n")
    expected = sum(source.count("\ndef test_") for _, source in files) + len(scripts)

    plugin = [] if plugin_installed() else ["-p", "bgjobs.pytest_plugin"]
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *plugin, "tests")

    result.assert_outcomes(passed=expected)
