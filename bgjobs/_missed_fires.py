"""Fires of a remote schedule that never reached the app.

The Trigger.dev dispatcher sends each fire's time (``Bgjobs-Scheduled-For``) and the
schedule's previous fire (``Bgjobs-Previous-Fire``). Every dispatch that names its own
fire claims it in the state store's ``fires`` table, so when the next fire arrives, a
previous fire whose claim is still free never got here: the app was down, or unreachable,
for longer than the dispatcher's retries. Claiming it then makes the report once-only,
whatever the number of retried requests or processes.
"""

from __future__ import annotations

from datetime import datetime

from .store import DEFAULT_KEEP_RUNS, StateStore

# Trigger.dev sends times in milliseconds; the store keeps them as float seconds.
_SAME_FIRE = 0.001


def note_arrival(store: StateStore, job_id: str, scheduled_for: datetime) -> None:
    """Record that the fire of ``job_id`` due at ``scheduled_for`` reached the app."""
    store.claim_fire(job_id, scheduled_for)


def previous_fire_missed(store: StateStore, job_id: str, previous: datetime) -> bool:
    """Whether the fire of ``job_id`` due at ``previous`` never reached the app and has
    not been reported yet; ``True`` once per fire, for the caller who reports it.

    A fire whose claim is free but whose run is on record arrived before the claim was
    pruned (claims live a day, like idempotency keys). A store that holds no earlier fire
    of the job cannot tell a missed fire from a fresh store (a new host, a first deploy of
    this version), so that is not reported.
    """
    if not store.claim_fire(job_id, previous):
        return False  # it arrived, or was reported already
    due = previous.timestamp()
    earlier_on_record = False
    for run in store.job_runs(job_id, DEFAULT_KEEP_RUNS):
        if run.scheduled_for is None:
            continue
        fired = run.scheduled_for.timestamp()
        if abs(fired - due) < _SAME_FIRE:
            return False
        earlier_on_record = earlier_on_record or fired < due
    return earlier_on_record
