"""Fixtures shared by every test module. Topic-specific helpers live in tests/support_*.py."""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so tests can import support_* and fakes

from bgjobs.local import LocalJobManager


@pytest.fixture
def manager() -> Iterator[LocalJobManager]:
    """A fresh local manager (empty environment) that is stopped after the test."""
    m = LocalJobManager(env={})
    try:
        yield m
    finally:
        m.stop_all_jobs(wait=True, timeout=5)


@pytest.fixture(autouse=True)
def _reset_singleton() -> Iterator[None]:
    yield
    from bgjobs.factory import reset_job_manager

    reset_job_manager()
