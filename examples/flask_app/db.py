"""The example's SQLite database (stdlib ``sqlite3``, no ORM): schema, connections, seed data.

Timestamps are stored as fixed-width UTC text (``2025-01-31T09:00:00Z``), so comparing
the text compares the times.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    path         TEXT PRIMARY KEY,          -- relative to the content folder, '/'-separated
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    content_hash TEXT NOT NULL,             -- sha256 of the file: unchanged files are skipped
    imported_at  TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS subscriptions (
    id         INTEGER PRIMARY KEY,
    email      TEXT NOT NULL,
    plan       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'expired')),
    expires_at TEXT NOT NULL                -- the end of the current period
);

-- Mail waiting to be sent. One reminder per subscription and period, enforced here, so a
-- job that runs twice (a retry, two schedulers) can never send two.
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY,
    subscription_id INTEGER NOT NULL REFERENCES subscriptions (id),
    kind            TEXT NOT NULL,
    period_end      TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (subscription_id, kind, period_end)
);
"""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(when: datetime) -> str:
    """``when`` as stored: UTC, to the second, ``2025-01-31T09:00:00Z``."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def connect(path: str) -> Iterator[sqlite3.Connection]:
    """A connection for one unit of work: committed if the block succeeds, rolled back if it
    raises, closed either way. Rows are :class:`sqlite3.Row` (access by column name)."""
    conn = sqlite3.connect(path, timeout=10)  # jobs and requests may write at the same time
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    try:
        with conn:  # commit, or roll back on an exception
            yield conn
    finally:
        conn.close()


def init_db(path: str, *, seed: bool = False, now: Optional[datetime] = None) -> None:
    """Create the tables if missing; with ``seed``, add sample subscriptions to an empty DB."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")  # readers don't wait for the jobs' writes
        conn.executescript(SCHEMA)
        if seed and not conn.execute("SELECT 1 FROM subscriptions LIMIT 1").fetchone():
            seed_subscriptions(conn, now or utcnow())


def seed_subscriptions(conn: sqlite3.Connection, now: datetime) -> None:
    """Subscriptions around ``now`` that give each job something to do."""
    samples = [
        ("ada@example.com", "pro", "active", now + timedelta(days=3)),  # reminder due
        ("grace@example.com", "team", "active", now + timedelta(days=6, hours=20)),  # due
        ("linus@example.com", "pro", "active", now + timedelta(days=30)),  # not yet
        ("barbara@example.com", "basic", "active", now - timedelta(days=2)),  # to expire
        ("alan@example.com", "team", "expired", now - timedelta(days=40)),  # long gone
    ]
    conn.executemany(
        "INSERT INTO subscriptions (email, plan, status, expires_at) VALUES (?, ?, ?, ?)",
        [(email, plan, status, iso(expires)) for email, plan, status, expires in samples],
    )
