"""Reading bgjobs' settings from the environment (or any mapping).

Every reader takes an optional mapping, ``os.environ`` by default; the Flask extension
passes ``app.config`` merged over the environment. Nothing here caches: a changed
environment is seen by the next call.

=========================  ==============================================================
``BGJOBS_MODE``            force a mode: ``local``, ``trigger-dev``, ``vercel``, ``disabled``
``BGJOBS_ENV``/``APP_ENV`` app environment, ``development`` by default
``DISABLE_AUTO_SYNC``      1/true/yes/on → ``disabled``
``VERCEL``                 ``1`` → ``vercel`` (Vercel sets it)
``TRIGGER_DEV_*``          see :func:`get_trigger_dev_config`
=========================  ==============================================================
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

from .types import SchedulingMode, TriggerDevConfig

__all__ = [
    "DEFAULT_TRIGGER_DEV_API_URL",
    "Env",
    "get_app_environment",
    "get_scheduling_mode",
    "get_trigger_dev_config",
    "is_truthy",
    "is_valid_url",
    "should_use_trigger_dev",
    "trigger_dev_config_problem",
]

Env = Mapping[str, Any]
"""Where settings are read from: ``os.environ``, ``app.config``, or any mapping."""

DEFAULT_TRIGGER_DEV_API_URL = "https://api.trigger.dev"
_TRUTHY = frozenset({"1", "true", "yes", "on"})
_MODES: tuple[SchedulingMode, ...] = ("trigger-dev", "vercel", "local", "disabled")
TRIGGER_DEV_ENVIRONMENTS = ("development", "staging", "production")


def _env(env: Optional[Env]) -> Env:
    return os.environ if env is None else env


def _get(env: Env, *names: str) -> Optional[str]:
    """First non-empty value among ``names``, as a stripped string; ``None`` if all unset."""
    for name in names:
        value = env.get(name)
        if value is None:
            continue
        text = str(value).strip()
        if text:
            return text
    return None


def is_truthy(value: object) -> bool:
    """``True`` for ``1``/``true``/``yes``/``on`` (any case) and for the boolean ``True``."""
    if isinstance(value, bool):
        return value
    return value is not None and str(value).strip().lower() in _TRUTHY


def is_valid_url(url: Optional[str]) -> bool:
    """An absolute ``http``/``https`` URL with a host."""
    if not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def get_app_environment(env: Optional[Env] = None) -> str:
    """``BGJOBS_ENV``, else ``APP_ENV``, else ``"development"`` (lower-cased)."""
    return (_get(_env(env), "BGJOBS_ENV", "APP_ENV") or "development").lower()


def get_trigger_dev_config(env: Optional[Env] = None) -> TriggerDevConfig:
    """Trigger.dev settings.

    ``TRIGGER_DEV_ENABLED`` (1/true/yes/on), ``TRIGGER_DEV_API_KEY`` (else
    ``TRIGGER_SECRET_KEY``), ``TRIGGER_DEV_API_URL`` (else ``TRIGGER_API_URL``, default
    ``https://api.trigger.dev``), ``TRIGGER_DEV_ENVIRONMENT`` (development | staging |
    production, default development). An unknown environment makes the config not
    fully configured (it ends up in every schedule's deduplication key, so a typo must not
    be used); the factory warns about it and the Trigger.dev manager refuses it by name.
    """
    source = _env(env)
    enabled_raw = _get(source, "TRIGGER_DEV_ENABLED")
    api_key = _get(source, "TRIGGER_DEV_API_KEY", "TRIGGER_SECRET_KEY")
    api_url_raw = _get(source, "TRIGGER_DEV_API_URL", "TRIGGER_API_URL")
    environment_raw = _get(source, "TRIGGER_DEV_ENVIRONMENT")
    environment = (environment_raw or "development").lower()
    given = any(v is not None for v in (enabled_raw, api_key, api_url_raw, environment_raw))
    return TriggerDevConfig(
        enabled=is_truthy(enabled_raw),
        api_key=api_key,
        api_url=(api_url_raw or DEFAULT_TRIGGER_DEV_API_URL).rstrip("/"),
        environment=environment,
        settings_given=given,
    )


def trigger_dev_config_problem(config: TriggerDevConfig) -> Optional[str]:
    """Why ``config`` is not fully configured, in one sentence; ``None`` if it is."""
    if not config.api_key:
        return "TRIGGER_DEV_API_KEY (or TRIGGER_SECRET_KEY) is not set"
    if not is_valid_url(config.api_url):
        return f"TRIGGER_DEV_API_URL={config.api_url!r} is not an http(s) URL"
    if config.environment not in TRIGGER_DEV_ENVIRONMENTS:
        return (
            f"TRIGGER_DEV_ENVIRONMENT={config.environment!r} is not one of "
            f"{', '.join(TRIGGER_DEV_ENVIRONMENTS)}"
        )
    return None


def should_use_trigger_dev(env: Optional[Env] = None) -> bool:
    """Fully configured, enabled, and the app environment is ``production``."""
    source = _env(env)
    config = get_trigger_dev_config(source)
    return (
        config.enabled
        and config.is_fully_configured
        and get_app_environment(source) == "production"
    )


def get_scheduling_mode(env: Optional[Env] = None) -> SchedulingMode:
    """The runtime to use; the first rule that matches wins.

    1. ``BGJOBS_MODE`` when set (an empty value counts as unset; an unknown one is a
       ``ValueError`` naming it);
    2. ``disabled`` when ``DISABLE_AUTO_SYNC`` is 1/true/yes/on;
    3. ``trigger-dev`` when :func:`should_use_trigger_dev`;
    4. ``vercel`` when ``VERCEL=1``;
    5. ``local``.
    """
    source = _env(env)
    forced = _get(source, "BGJOBS_MODE")
    if forced is not None:
        mode = forced.lower()
        if mode not in _MODES:
            raise ValueError(f"BGJOBS_MODE={forced!r} is not one of {', '.join(_MODES)}")
        return mode
    if is_truthy(_get(source, "DISABLE_AUTO_SYNC")):
        return "disabled"
    if should_use_trigger_dev(source):
        return "trigger-dev"
    if _get(source, "VERCEL") == "1":
        return "vercel"
    return "local"
