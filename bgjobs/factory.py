"""Building the manager for the configured mode, and the process-wide singleton.

The mode comes from :func:`bgjobs.config.get_scheduling_mode` and nowhere else, so the
factory and the mode function can never disagree (the original's did).
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

from .config import Env, Settings
from .registry import JobRegistry
from .types import BackgroundJobManager

__all__ = [
    "create_job_manager",
    "get_job_manager",
    "initialize_background_jobs",
    "reset_job_manager",
]

logger = logging.getLogger(__name__)

# Guards _manager and _app_hint: the one documented piece of global mutable state.
_manager_lock = threading.Lock()
_manager: Optional[BackgroundJobManager] = None
# While the singleton is made for initialize_background_jobs: its registry's file, which
# names the app's default state directory (create_job_manager is called without it, so
# that it can be replaced by a plain function).
_app_hint: Optional[str] = None


def create_job_manager(
    env: Optional[Env] = None, *, settings: Optional[Settings] = None, app: Optional[str] = None
) -> BackgroundJobManager:
    """A new manager for the mode :func:`~bgjobs.config.get_scheduling_mode` picks.

    disabled → :class:`~bgjobs.noop.NoOpJobManager`, local →
    :class:`~bgjobs.local.LocalJobManager`, vercel → :class:`~bgjobs.vercel.VercelJobManager`,
    trigger-dev → :class:`~bgjobs.triggerdev.TriggerDevJobManager`. Settings are read from
    ``env`` (default ``os.environ``) once, unless ``settings`` is given. A local manager
    gets the default state directory unless ``BGJOBS_STATE_DIR`` says otherwise (``app``
    names the app for it: see :func:`bgjobs.config.default_state_dir`), so every process
    of the app shares one state store and each fire runs once.
    """
    settings = Settings.coerce(settings, env)
    mode = settings.mode
    trigger_config = settings.trigger_dev
    if trigger_config.is_partially_configured:
        logger.warning(
            "Trigger.dev is partially configured (%r) and will not be used: %s",
            trigger_config,
            trigger_config.problem,
        )
    logger.info("bgjobs scheduling mode: %s", mode)
    manager: BackgroundJobManager
    if mode == "disabled":
        from .noop import NoOpJobManager

        manager = NoOpJobManager()
    elif mode == "local":
        from .local import LocalJobManager

        manager = LocalJobManager(
            settings=settings.with_default_state_dir(app if app is not None else _app_hint)
        )
    elif mode == "vercel":
        from .vercel import VercelJobManager

        manager = VercelJobManager(settings=settings)
    else:
        from .triggerdev import TriggerDevJobManager

        manager = TriggerDevJobManager(trigger_config, settings=settings)
    return manager


def get_job_manager() -> BackgroundJobManager:
    """The process-wide manager, created from ``os.environ`` on first call.

    Exactly one instance is created however many threads race for it.
    """
    return _singleton(None)


def _singleton(app: Optional[str]) -> BackgroundJobManager:
    global _manager, _app_hint
    manager = _manager
    if manager is not None:
        return manager
    with _manager_lock:
        if _manager is None:
            _app_hint = app
            try:
                _manager = create_job_manager()
            finally:
                _app_hint = None
        return _manager


def reset_job_manager() -> None:
    """Close the singleton (stop its jobs, release its threads and connections) and drop
    it; the next :func:`get_job_manager` makes a fresh one."""
    global _manager
    with _manager_lock:
        manager, _manager = _manager, None
    if manager is not None:
        manager.close()


def initialize_background_jobs(
    registry: JobRegistry, manager: Optional[BackgroundJobManager] = None
) -> BackgroundJobManager:
    """Schedule ``registry``'s jobs on ``manager`` (default: the singleton), once.

    Thread-safe and idempotent; if scheduling fails the call raises and a later call
    tries again. Returns the manager.
    """
    # A singleton made here is named for the registry's file, as `bgjobs exec` names it.
    target = manager if manager is not None else _singleton(registry.source_file)
    if registry.apply_once(target):
        logger.info("bgjobs: scheduled %d job(s) on %r", len(registry), target)
    return target
