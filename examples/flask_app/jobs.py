"""The app's background jobs, declared once.

The Flask app schedules them (``BGJobs`` in ``app.py``), and ``flask bgjobs ...`` or
``bgjobs ... examples/flask_app/app.py:create_app`` run them from the command line. They
run inside the app context ``BGJobs`` provides and find the database in
``current_app.config["DATABASE"]``.

Every job is idempotent — running it twice changes nothing the second time — because a
scheduler may well run it twice: a retry, a deploy overlapping the old version, two
schedulers during a migration. Each takes an optional ``now`` so tests can pin the
clock; the scheduler calls it without arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Dict, Optional, Tuple

from flask import current_app

from bgjobs import JobRegistry

from . import db

__all__ = ["expire_subscriptions", "jobs", "send_renewal_reminders", "sync_repository"]

logger = logging.getLogger(__name__)

jobs = JobRegistry()

REMINDER_WINDOW = timedelta(days=7)
"""Remind subscribers whose period ends within this window."""

CONTENT_SUFFIXES = (".md", ".json")


@jobs.interval("repository-sync", "Repository Synchronization", minutes=5)
def sync_repository(now: Optional[datetime] = None) -> Dict[str, int]:
    """Import the content folder (``CONTENT_DIR``) into ``documents``.

    Upserts by path; a file whose sha256 is unchanged is not written again, and documents
    whose file is gone are deleted. Returns how many were inserted, updated, unchanged and
    deleted.
    """
    stamp = db.iso(now or db.utcnow())
    folder = Path(current_app.config["CONTENT_DIR"])
    files = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.suffix in CONTENT_SUFFIXES and path.is_file()
    }
    counts = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    with db.connect(current_app.config["DATABASE"]) as conn:
        known = {
            row["path"]: row["content_hash"]
            for row in conn.execute("SELECT path, content_hash FROM documents")
        }
        for name, path in files.items():
            raw = path.read_bytes()
            digest = hashlib.sha256(raw).hexdigest()
            if known.get(name) == digest:
                counts["unchanged"] += 1
                continue
            title, body = _parse_document(path, raw.decode("utf-8"))
            conn.execute(
                """
                INSERT INTO documents (path, title, body, content_hash, imported_at, updated_at)
                VALUES (:path, :title, :body, :hash, :now, :now)
                ON CONFLICT (path) DO UPDATE SET
                    title = excluded.title,
                    body = excluded.body,
                    content_hash = excluded.content_hash,
                    updated_at = excluded.updated_at
                WHERE documents.content_hash <> excluded.content_hash
                """,
                {"path": name, "title": title, "body": body, "hash": digest, "now": stamp},
            )
            counts["updated" if name in known else "inserted"] += 1
        gone = sorted(set(known) - set(files))
        conn.executemany("DELETE FROM documents WHERE path = ?", [(name,) for name in gone])
        counts["deleted"] = len(gone)
    logger.info("repository sync: %s", ", ".join(f"{n} {what}" for what, n in counts.items()))
    return counts


def _parse_document(path: Path, text: str) -> Tuple[str, str]:
    """``(title, body)``: Markdown's first ``# `` heading, or a JSON object's fields."""
    if path.suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("body"), str):
            raise ValueError(f"{path.name}: expected a JSON object with a 'body' string")
        return str(data.get("title") or path.stem), data["body"]
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip(), text
    return path.stem, text


@jobs.cron("subscription-renewal-reminder", "Subscription Renewal Reminder", "0 9 * * *")
def send_renewal_reminders(now: Optional[datetime] = None) -> int:
    """Queue one reminder per active subscription whose period ends within seven days.

    ``outbox`` has ``UNIQUE (subscription_id, kind, period_end)`` and this job inserts with
    ``INSERT OR IGNORE``: however often it runs, a period gets one reminder; a renewed
    subscription (a new ``expires_at``) gets one for its new period. Returns how many
    reminders were queued.
    """
    now = now or db.utcnow()
    queued = 0
    with db.connect(current_app.config["DATABASE"]) as conn:
        due = conn.execute(
            """
            SELECT id, email, plan, expires_at FROM subscriptions
            WHERE status = 'active' AND expires_at > ? AND expires_at <= ?
            ORDER BY expires_at
            """,
            (db.iso(now), db.iso(now + REMINDER_WINDOW)),
        ).fetchall()
        for sub in due:
            day = sub["expires_at"][:10]
            cursor = conn.execute(
                """
                INSERT OR IGNORE INTO outbox
                    (subscription_id, kind, period_end, recipient, subject, body, created_at)
                VALUES (?, 'renewal-reminder', ?, ?, ?, ?, ?)
                """,
                (
                    sub["id"],
                    sub["expires_at"],
                    sub["email"],
                    f"Your {sub['plan']} subscription renews on {day}",
                    f"Hello,\n\nyour {sub['plan']} subscription renews on {day}. "
                    "Nothing to do if you want to keep it.\n",
                    db.iso(now),
                ),
            )
            queued += cursor.rowcount  # 0 when this period was already reminded
    logger.info("renewal reminders: %d queued, %d already sent", queued, len(due) - queued)
    return queued


@jobs.cron("subscription-expired-cleanup", "Subscription Expired Cleanup", "0 0 * * *")
def expire_subscriptions(now: Optional[datetime] = None) -> int:
    """Mark active subscriptions whose period has ended as ``expired``; returns how many."""
    with db.connect(current_app.config["DATABASE"]) as conn:
        cursor = conn.execute(
            "UPDATE subscriptions SET status = 'expired' "
            "WHERE status = 'active' AND expires_at <= ?",
            (db.iso(now or db.utcnow()),),
        )
        expired = cursor.rowcount
    logger.info("expired subscriptions: %d", expired)
    return expired
