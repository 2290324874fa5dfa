"""The HTML status page, rendered by a real headless Chromium over real HTTP.

Chromium comes from ``shutil.which("chromium")`` or ``$CHROMIUM``. Without it the test is
skipped — except on CI (``CI=true``), where .ci/run installs it and a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from support_web import serve

from bgjobs import JobRegistry, LocalJobManager
from bgjobs.wsgi import create_app

pytestmark = pytest.mark.slow

TOKEN = "browser-token"
EVIL_NAME = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
BROWSER_TIMEOUT = 90


def find_chromium() -> str:
    path = shutil.which("chromium") or os.environ.get("CHROMIUM")
    if path:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is required on CI (install it, or set CHROMIUM=/path/to/chromium)")
    pytest.skip("chromium is not installed (set CHROMIUM=/path/to/chromium)")


class _Rows(HTMLParser):
    """Collects each job row (``<tr data-job-id>``) as its cells' text, and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: Dict[str, List[str]] = {}
        self.tags: List[Tuple[str, Dict[str, Optional[str]]]] = []
        self.title = ""
        self._row: Optional[str] = None
        self._cell: Optional[List[str]] = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "tr" and attributes.get("data-job-id"):
            self._row = attributes["data-job-id"]
            self.rows[self._row] = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self.rows[self._row].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data


@pytest.fixture
def populated() -> Iterator[Tuple[LocalJobManager, JobRegistry]]:
    jobs = JobRegistry()

    @jobs.interval("repository-sync", "Repository Synchronization", minutes=5)
    def sync() -> None:
        pass

    @jobs.cron("renewal-reminder", "Subscription Renewal Reminder", "0 9 * * *")
    def remind() -> None:
        raise RuntimeError("SMTP said <421> & went away")

    @jobs.interval("evil", EVIL_NAME, hours=1)
    def evil() -> None:
        pass

    manager = LocalJobManager(env={})
    jobs.apply(manager)
    manager.trigger_job("repository-sync")
    manager.trigger_job("renewal-reminder")
    manager.stop_job("evil")
    try:
        yield manager, jobs
    finally:
        manager.stop_all_jobs(wait=True, timeout=5)


def test_status_page_renders_every_job_in_headless_chromium(
    populated: Tuple[LocalJobManager, JobRegistry],
    tmp_path: os.PathLike[str],
) -> None:
    chromium = find_chromium()
    manager, jobs = populated
    app = create_app(manager, secret=TOKEN, env={"BGJOBS_ENV": "production"})
    with serve(app) as base:
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path}",
                "--dump-dom",
                f"{base}/api/cron/?token={TOKEN}",
            ],
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = _Rows()
    dom.feed(result.stdout)

    # Every job has its row, in scheduling order, with its name as plain text.
    assert list(dom.rows) == [d.id for d in jobs]
    assert dom.rows["repository-sync"][0] == "Repository Synchronization repository-sync"
    assert dom.rows["evil"][0] == f"{EVIL_NAME} evil"
    assert dom.rows["renewal-reminder"][1] == "failed"
    assert "RuntimeError: SMTP said <421> & went away" in dom.rows["renewal-reminder"]
    assert dom.rows["evil"][1] == "stopped"

    # The hostile name stayed text: no script or img element exists and nothing ran.
    assert not [tag for tag, _ in dom.tags if tag in ("script", "img")]
    assert dom.title.startswith("bgjobs")
    assert ("meta", {"http-equiv": "refresh", "content": "5"}) in dom.tags
    assert TOKEN not in result.stdout


def test_missing_chromium_fails_on_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is required on CI"):
        find_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        find_chromium()
    monkeypatch.setenv("CHROMIUM", "/opt/chromium/chrome")
    assert find_chromium() == "/opt/chromium/chrome"
