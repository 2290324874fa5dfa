"""The registry stamp: which schedule each job had, newest last, kept on Trigger.dev itself.

During a rolling deploy old and new app processes run side by side, and each registers its
own schedules at start-up: an old replica would put its old cron back. Nothing on a
schedule can carry a version, so bgjobs keeps one more schedule per environment, keyed
``bgjobs-registry:<scope>`` and never active (inactive schedules neither fire nor count
against the plan's limit), whose ``externalId`` records, per job, the fingerprints of the
last schedules registered for it. A start-up registration whose fingerprint is the latest
has nothing to do (no request per job); one that is in the history but not the latest
comes from an older registry and is not sent. ``sync()`` — the deploy step — always
registers, and stamps what it registered.
"""

from __future__ import annotations

import hashlib
import json
from typing import Dict, List, Literal, Mapping, Optional

__all__ = [
    "MARKER_CRON",
    "Verdict",
    "decode",
    "encode",
    "fingerprint",
    "marker_key",
    "stamped",
    "verdict",
]

MARKER_CRON = "0 0 1 1 *"
"""The marker's cron; it never fires, being inactive."""
_PREFIX = "bgjobs-registry:"
_HISTORY = 5  # fingerprints kept per job

Verdict = Literal["register", "current", "older"]


def marker_key(scope: str) -> str:
    """The marker schedule's deduplication key; outside ``bgjobs:<scope>:``, so neither
    ``prune`` nor the job listing ever sees it, and no job id can collide with it."""
    return f"{_PREFIX}{scope}"


def fingerprint(task: str, cron: str, tz: str) -> str:
    """A short, stable fingerprint of one job's schedule."""
    return hashlib.sha256(f"{task}\n{cron}\n{tz}".encode()).hexdigest()[:10]


def decode(external_id: Optional[str]) -> Dict[str, List[str]]:
    """The per-job histories in a marker's ``externalId``; empty if it holds none."""
    if not external_id or not external_id.startswith(_PREFIX):
        return {}
    try:
        data = json.loads(external_id[len(_PREFIX) :])
    except ValueError:
        return {}
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        return {}
    return {
        str(job): [str(h) for h in history]
        for job, history in jobs.items()
        if isinstance(history, list)
    }


def encode(histories: Mapping[str, List[str]]) -> str:
    """The marker's ``externalId`` for these histories."""
    jobs = {job: history[-_HISTORY:] for job, history in sorted(histories.items())}
    return _PREFIX + json.dumps({"v": 1, "jobs": jobs}, separators=(",", ":"))


def verdict(history: List[str], current: str) -> Verdict:
    """What a start-up registration of ``current`` should do, given the job's history."""
    if history and history[-1] == current:
        return "current"
    if current in history:
        return "older"
    return "register"


def stamped(history: List[str], current: str) -> List[str]:
    """The history once ``current`` has been registered: it becomes the latest."""
    kept = [h for h in history if h != current][-(_HISTORY - 1) :]
    return [*kept, current]
