"""Trigger.dev environments as secret keys name them, and the scope of bgjobs' schedule keys.

A secret key says which environment it belongs to (``tr_dev_``, ``tr_stg_``, ``tr_prod_``,
``tr_preview_``, as the server makes them), and deduplication keys are unique per
*project*, not per environment. So each environment — and each developer's own
development environment, and each preview branch — needs a scope of its own in
``bgjobs:<scope>:<job id>``, or one environment's sync moves another's schedules away.
"""

from __future__ import annotations

import hashlib
import re
from typing import Optional

__all__ = ["KEY_PREFIXES", "branch_slug", "key_environment", "schedule_scope"]

KEY_PREFIXES = (
    ("tr_dev_", "development"),
    ("tr_stg_", "staging"),
    ("tr_prod_", "production"),
    ("tr_preview_", "preview"),
)
"""Secret-key prefixes and the environment each names (the server's ``apiKeyPrefix``)."""

_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_MAX = 40


def key_environment(api_key: Optional[str]) -> Optional[str]:
    """The environment a secret key belongs to, from its prefix; ``None`` if unknown."""
    if not api_key:
        return None
    for prefix, environment in KEY_PREFIXES:
        if api_key.startswith(prefix):
            return environment
    return None


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def branch_slug(branch: str) -> str:
    """A branch name as a key part: safe characters only; a short hash keeps it distinct
    when characters had to be replaced or the name cut (``feature/a`` vs ``feature-a``)."""
    slug = _SLUG_UNSAFE.sub("-", branch).strip("-")
    if slug == branch and len(slug) <= _SLUG_MAX:
        return slug
    return f"{slug[:_SLUG_MAX]}-{_digest(branch, 8)}"


def schedule_scope(environment: str, api_key: Optional[str], branch: Optional[str]) -> str:
    """The ``<scope>`` in ``bgjobs:<scope>:<job id>``.

    ``production`` and ``staging`` are shared by the team. A development key belongs to
    one developer, so its scope is ``development-<10 hex digits of the key's SHA-256>``:
    stable for that key, different for every developer, and no use to anyone who reads
    it. A preview branch's scope is ``preview-<branch>``; a development branch adds
    ``-<branch>`` to the developer's scope.
    """
    if environment == "development" and api_key:
        scope = f"development-{_digest(api_key, 10)}"
        return f"{scope}-{branch_slug(branch)}" if branch else scope
    if environment == "preview":
        return f"preview-{branch_slug(branch)}" if branch else "preview"
    return environment
