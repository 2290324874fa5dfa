"""examples/vercel_app deploys as is, and the README's install and Vercel steps are true.

What Vercel does with the directory is taken from its Python builder (github.com/vercel/vercel,
packages/python and packages/python-analysis): it loads the first of app.py, index.py,
server.py, main.py, wsgi.py, asgi.py (at the root, or in src/, app/, api/) that assigns or
imports a top-level ``app``/``handler``, with the file's directory first on ``sys.path``; it
installs requirements.txt, where a local path must be a wheel (``./wheels/x.whl``).
"""

from __future__ import annotations

import ast
import configparser
import glob
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest
from support_cli import REPO, cli_env, run_cli

EXAMPLE = REPO / "examples" / "vercel_app"
README = REPO / "README.md"
VERCEL_ENTRYPOINTS = [
    f"{folder}{name}.py"
    for folder in ("", "src/", "app/", "api/")
    for name in ("app", "index", "server", "main", "wsgi", "asgi")
]
GENERATE = ("vercel-json", "examples/vercel_app/jobs.py", "--plan", "hobby")
SECRET = "s3cret-cron-value"


def _version() -> str:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config["metadata"]["version"]


def _requirements(path: Path) -> List[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _generated_vercel_json() -> str:
    result = run_cli(*GENERATE, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- the entrypoint and vercel.json ----------------------------------------------------


def test_the_entrypoint_is_where_vercel_looks_and_has_a_top_level_app() -> None:
    found = [name for name in VERCEL_ENTRYPOINTS if (EXAMPLE / name).is_file()]
    assert found == ["app.py"]
    tree = ast.parse((EXAMPLE / "app.py").read_text())
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "app" in assigned


def test_the_committed_vercel_json_is_what_bgjobs_vercel_json_prints() -> None:
    generated = _generated_vercel_json()
    assert (EXAMPLE / "vercel.json").read_text() == generated
    assert json.loads(generated) == {
        "crons": [
            {"path": "/api/cron/daily-digest", "schedule": "0 9 * * *"},
            {"path": "/api/cron/weekly-cleanup", "schedule": "30 3 * * 0"},
        ]
    }


def test_the_readme_vercel_json_sample_is_the_real_output() -> None:
    text = README.read_text()
    command = " ".join(("bgjobs", *GENERATE))
    match = re.search(
        rf"```sh\n\s*{re.escape(command)}[^\n]*\n\s*```\n\s*```json\n(.*?)```", text, re.S
    )
    assert match, f"the README shows no ```json block right after `{command}`"
    shown = textwrap.dedent(match.group(1))
    assert shown == _generated_vercel_json()


def test_the_readme_vercel_guide_states_what_vercel_does_not_do() -> None:
    guide = README.read_text().split("## Vercel guide", 1)[1].split("\n## ", 1)[0]
    guide = " ".join(guide.split())
    for fact in (
        "examples/vercel_app/",
        "at most once a day, anywhere within the hour it names",
        "±59 min",
        "Vercel calls a cron once per fire",
        "within the function's maximum duration",
        "Each function instance has its own memory",
        "`BGJOBS_DATABASE_URL`",
        "`VERCEL_ENV`",
        "`--plan hobby`",
    ):
        assert fact in guide, fact


_CALL_EVERY_CRON = """
import json, sys
from app import app   # as Vercel imports it: the entrypoint's directory first on sys.path

def call(path, headers):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_NAME": "x", "SERVER_PORT": "443", "wsgi.url_scheme": "https",
               "wsgi.input": sys.stdin.buffer, "wsgi.errors": sys.stderr}
    environ.update(headers)
    answer = {}
    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
    body = b"".join(app(environ, start_response))
    return answer["status"], json.loads(body)

print(type(app.endpoints.manager).__name__)
for cron in json.load(open("vercel.json"))["crons"]:
    unauthorized, _ = call(cron["path"], {})
    status, job = call(cron["path"], {"HTTP_AUTHORIZATION": "Bearer " + sys.argv[1]})
    print(cron["path"], unauthorized, status, job.get("status"))
"""


@pytest.mark.parametrize("vercel_env", ["production", "preview"])
def test_the_example_runs_each_cron_with_the_secret_and_refuses_others(vercel_env: str) -> None:
    env = cli_env(VERCEL="1", VERCEL_ENV=vercel_env, CRON_SECRET=SECRET)
    result = subprocess.run(
        [sys.executable, "-c", _CALL_EVERY_CRON, SECRET],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "VercelJobManager",
        "/api/cron/daily-digest 401 200 completed",
        "/api/cron/weekly-cleanup 401 200 completed",
    ]
    assert "daily-digest ran" in result.stderr and SECRET not in result.stderr


def test_the_example_deployed_without_a_cron_secret_runs_nothing() -> None:
    env = cli_env(VERCEL="1", VERCEL_ENV="production")
    result = subprocess.run(
        [sys.executable, "-c", _CALL_EVERY_CRON, "guess"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "/api/cron/daily-digest 401 401 None",
        "/api/cron/weekly-cleanup 401 401 None",
    ]
    assert "ran" not in result.stderr


# --- installing without PyPI ------------------------------------------------------------


def _build_wheel(tmp_path: Path) -> Path:
    """The README's build command, run on a copy of the checkout (no build/ left in it)."""
    source = tmp_path / "checkout"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "bgjobs", source / "bgjobs", ignore=shutil.ignore_patterns("__pycache__")
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.iterdir()
    return wheel


def _install(wheel: Path, target: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def _which_bgjobs(cwd: Path, path: List[Path]) -> str:
    """Where ``import bgjobs`` finds it in ``cwd`` with only ``path`` on ``PYTHONPATH``
    (this checkout is installed in the test's venv too, so a wrong copy would be found)."""
    env: Dict[str, str] = cli_env()
    env.pop("PYTHONPATH")
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    result = subprocess.run(
        [sys.executable, "-c", "import bgjobs, bgjobs.cli; print(bgjobs.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.slow
def test_the_example_requirements_install_the_wheel_the_readme_builds(tmp_path: Path) -> None:
    (requirement,) = _requirements(EXAMPLE / "requirements.txt")
    wheel = _build_wheel(tmp_path)
    # Vercel accepts a local path in requirements.txt only as a wheel's own file name.
    assert requirement == f"./wheels/{wheel.name}"
    assert wheel.name == f"bgjobs-{_version()}-py3-none-any.whl"
    # Vercel resolves the rest from the wheel's own metadata.
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"bgjobs-{_version()}.dist-info/METADATA").decode()
    requires = [
        line[len("Requires-Dist: ") :]
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    ]
    assert sorted(requires) == sorted(_install_requires())
    assert "--wheel-dir examples/vercel_app/wheels ." in README.read_text()

    deployed = tmp_path / "deployed"
    shutil.copytree(EXAMPLE, deployed, ignore=shutil.ignore_patterns("wheels", "__pycache__"))
    (deployed / "wheels").mkdir()
    shutil.copy(wheel, deployed / "wheels" / wheel.name)
    site = tmp_path / "site"
    _install(deployed / requirement, site)
    assert (site / "bgjobs" / "py.typed").is_file()
    assert _which_bgjobs(deployed, [site]) == str(site / "bgjobs" / "__init__.py")


def test_the_readme_installs_without_pypi() -> None:
    install = README.read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    blocks = "".join(re.findall(r"```sh\n(.*?)```", install, re.S))
    commands = [line.strip() for line in blocks.splitlines() if "pip install" in line]
    assert commands, "the Install section shows no pip install"
    for command in commands:
        assert not re.search(r"pip install (-\S+ )*[\"']?bgjobs\b", command), command
    assert f"dist/bgjobs-{_version()}-py3-none-any.whl" in install
    assert "pip wheel --no-deps --wheel-dir dist ." in install


# --- Trigger.dev's Python mode ------------------------------------------------------------

TRIGGER = REPO / "integrations" / "trigger.dev"


def _install_requires() -> List[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return [line.strip() for line in config["options"]["install_requires"].splitlines() if line]


def _scripts() -> List[str]:
    config = (TRIGGER / "trigger.config.ts").read_text()
    match = re.search(r"scripts:\s*\[(.*?)\]", config, re.S)
    assert match, "trigger.config.ts passes no scripts to pythonExtension"
    return re.findall(r'"([^"]+)"', re.sub(r"//[^\n]*", "", match.group(1)))


def test_trigger_dev_requirements_name_nothing_pypi_lacks() -> None:
    # pythonExtension COPYs requirements.txt alone and pip-installs it before the rest of the
    # project reaches the image: only index packages can install there, so bgjobs itself
    # arrives through the scripts option (next test) and its dependencies from here.
    assert _requirements(TRIGGER / "requirements.txt") == _install_requires()


def test_trigger_dev_image_imports_bgjobs_copied_by_the_scripts_option(tmp_path: Path) -> None:
    image = tmp_path / "app"  # the image's working directory, where the task starts python
    copied = 0
    for pattern in _scripts():
        for found in glob.glob(str(TRIGGER / pattern), recursive=True):
            # As pythonExtension's copy does: the path relative to the config, "../" dropped.
            parts = Path(os.path.relpath(found, TRIGGER)).parts
            inside = image.joinpath(*itertools.dropwhile(lambda part: part == "..", parts))
            inside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(found, inside)
            copied += 1
    assert copied > 20
    assert (image / "bgjobs" / "py.typed").is_file()
    assert _which_bgjobs(image, []) == str(image / "bgjobs" / "__init__.py")

    (image / "myjobs.py").write_text(
        "from bgjobs import JobRegistry\njobs = JobRegistry()\n"
        "jobs.add_interval('ping', 'Ping', lambda: print('pinged'), 60)\n"
    )
    env = cli_env()
    env.pop("PYTHONPATH")
    result = subprocess.run(
        [sys.executable, "-m", "bgjobs", "exec", "myjobs", "ping"],
        cwd=image,
        env={**env, "BGJOBS_STATE_DIR": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "pinged" in result.stdout
