"""bgjobs' settings: every key it reads, read once into one frozen :class:`Settings`.

Every manager, face and command takes a :class:`Settings` (or builds one with
:meth:`Settings.from_env`); nothing else in bgjobs reads ``os.environ``. The Flask
extension builds it from ``app.config`` merged over the environment. An empty value counts
as unset everywhere.

=============================  ===========================================================
key                            meaning (default)
=============================  ===========================================================
``BGJOBS_MODE``                force a mode: ``local``, ``trigger-dev``, ``vercel``,
                               ``disabled`` (unset: chosen by :attr:`Settings.mode`)
``BGJOBS_ENV`` / ``APP_ENV``   the app environment (on Vercel ``VERCEL_ENV``, else
                               ``development``; see :func:`get_app_environment`)
``VERCEL_ENV``                 Vercel's ``production`` | ``preview`` | ``development``
``DISABLE_AUTO_SYNC``          1/true/yes/on → ``disabled`` mode
``VERCEL``                     ``1`` → ``vercel`` mode (Vercel sets it)
``BGJOBS_TIMEZONE``            cron jobs declared without a timezone use it (``UTC``)
``BGJOBS_STATE_DIR``           the state directory: lock files and ``state.db``, so one
                               process per host runs each fire and every process shows the
                               host's truth (where an app is wired: a per-user, per-app
                               default, see :func:`default_state_dir`; ``""``: off, memory
                               only). ``BGJOBS_LOCK_DIR`` is its older name
``BGJOBS_MAX_WORKERS``         local mode: scheduled runs at once per manager (10)
``BGJOBS_SHUTDOWN_TIMEOUT``    seconds running jobs get at exit and ``close()`` (10)
``BGJOBS_SECRET``              the HTTP endpoints' Bearer secret (else ``CRON_SECRET``)
``CRON_SECRET``                the secret Vercel sends its cron calls with
``BGJOBS_URL_PREFIX``          where the HTTP endpoints live (``/api/cron``)
``BGJOBS_AUTOSTART``           Flask: schedule the registry's jobs in ``init_app`` (true)
``BGJOBS_HISTORY_RUNS``        runs kept per job in the state store's history (100)
``BGJOBS_HISTORY_DAYS``        days a run is kept in the history (7)
``TRIGGER_DEV_ENABLED``        1/true/yes/on: use Trigger.dev in production
``TRIGGER_DEV_API_KEY``        the project's secret key (else ``TRIGGER_SECRET_KEY``)
``TRIGGER_DEV_API_URL``        else ``TRIGGER_API_URL`` (``https://api.trigger.dev``)
``TRIGGER_DEV_ENVIRONMENT``    development | staging | production | preview (the key's,
                               by its prefix ``tr_dev_``/``tr_stg_``/``tr_prod_``/
                               ``tr_preview_``; else ``development``)
``TRIGGER_PREVIEW_BRANCH``     a preview key's branch (else ``VERCEL_GIT_COMMIT_REF``)
``TRIGGER_DEV_BRANCH``         a development key's branch, if any
``TRIGGER_DEV_TASK_ID``        the dispatcher task's id (``bgjobs-dispatch``)
``TRIGGER_DEV_MAX_ATTEMPTS``   attempts of each Trigger.dev API call, the first included (5)
``TRIGGER_DEV_REGISTER_ON_START``  register schedules when jobs are scheduled (on)
``TRIGGER_DEV_REGISTRY_STAMP``  keep the registry stamp on Trigger.dev (on)
=============================  ===========================================================

The module-level readers (:func:`get_scheduling_mode`, :func:`get_trigger_dev_config`,
:func:`should_use_trigger_dev`) are the contract's; each reads only the keys it needs, so a
bad value of an unrelated key never breaks it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Tuple

from ._trigger_keys import key_environment
from .types import DEFAULT_TRIGGER_DEV_API_URL, SchedulingMode, TriggerDevConfig

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_PREFIX",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_TASK_ID",
    "DEFAULT_TRIGGER_DEV_API_URL",
    "Env",
    "Settings",
    "default_state_dir",
    "state_dir_setting",
    "get_app_environment",
    "get_scheduling_mode",
    "get_trigger_dev_config",
    "is_truthy",
    "normalize_prefix",
    "should_use_trigger_dev",
]

Env = Mapping[str, Any]
"""Where settings are read from: ``os.environ``, ``app.config``, or any mapping."""

DEFAULT_TASK_ID = "bgjobs-dispatch"
DEFAULT_PREFIX = "/api/cron"
DEFAULT_MAX_WORKERS = 10
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_TRIGGER_DEV_MAX_ATTEMPTS = 5
DEFAULT_HISTORY_RUNS = 100
DEFAULT_HISTORY_DAYS = 7
MODES: Tuple[SchedulingMode, ...] = ("trigger-dev", "vercel", "local", "disabled")

_TRUTHY = frozenset({"1", "true", "yes", "on"})


def _get(env: Env, *names: str) -> Optional[str]:
    """First non-empty value among ``names``, as a stripped string; ``None`` if all unset."""
    for name in names:
        value = env.get(name)
        if value is None or value is False:
            continue
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        text = text.strip()
        if text:
            return text
    return None


def is_truthy(value: object) -> bool:
    """``True`` for ``1``/``true``/``yes``/``on`` (any case) and for the boolean ``True``."""
    if isinstance(value, bool):
        return value
    return value is not None and str(value).strip().lower() in _TRUTHY


def normalize_prefix(prefix: str) -> str:
    """``"api/cron/"`` → ``"/api/cron"``; ``""`` and ``"/"`` → ``""`` (the root)."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string like '/api/cron', got {prefix!r}")
    stripped = prefix.strip().strip("/")
    return f"/{stripped}" if stripped else ""


def _flag(env: Env, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    return is_truthy(raw)


def _whole_number(env: Env, name: str, default: int) -> int:
    """A setting that must be a whole number >= 1; the error names it."""
    raw = env.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(str(raw))
    except ValueError:
        value = 0
    if value < 1 or isinstance(raw, bool):
        raise ValueError(f"{name} must be a whole number >= 1, got {raw!r}")
    return value


def _shutdown_timeout(env: Env) -> float:
    raw = env.get("BGJOBS_SHUTDOWN_TIMEOUT")
    if raw is None or str(raw).strip() == "":
        return DEFAULT_SHUTDOWN_TIMEOUT
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"BGJOBS_SHUTDOWN_TIMEOUT must be a number of seconds >= 0 (e.g. 10), got {raw!r}"
        )
    return value


def state_dir_setting(env: Env) -> Optional[str]:
    """``BGJOBS_STATE_DIR`` (else ``BGJOBS_LOCK_DIR``): a path; ``""`` when set but empty
    (or ``False``/``None`` in ``app.config``): off; ``None`` when neither is set."""
    for name in ("BGJOBS_STATE_DIR", "BGJOBS_LOCK_DIR"):
        if name not in env:
            continue
        value = env[name]
        if value is None or value is False:
            return ""
        return (os.fspath(value) if isinstance(value, os.PathLike) else str(value)).strip()
    return None


def default_state_dir(app: Optional[str] = None) -> str:
    """The state directory used where an app is wired and ``BGJOBS_STATE_DIR`` is unset.

    ``$XDG_STATE_HOME/bgjobs/<app>-<hash>`` (``~/.local/state`` when ``XDG_STATE_HOME`` is
    unset): private to the user, and one per app, so two apps never share job state. The
    app is ``app`` when given (e.g. the APP of the command line), else the program that runs
    (the ``__main__`` module's file: gunicorn, uwsgi, your script) together with the working
    directory. :func:`bgjobs.initialize_background_jobs` and the command line pass the file
    that declares the :class:`~bgjobs.registry.JobRegistry`, so a gunicorn app and a
    ``bgjobs exec`` of the same registry share one store. Two apps started from the same
    directory by the same launcher without a registry would share it: give them each a
    ``BGJOBS_STATE_DIR``.
    """
    base = os.environ.get("XDG_STATE_HOME", "").strip() or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    if app is not None:
        key = app.encode("utf-8", "surrogateescape")
    else:
        main = sys.modules.get("__main__")
        app = str(getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "") or "python")
        key = f"{os.path.abspath(os.getcwd())}\0{app}".encode("utf-8", "surrogateescape")
    stem = os.path.splitext(os.path.basename(app.rstrip("/:")))[0].lower()
    name = re.sub(r"[^a-z0-9_.-]+", "-", stem).strip("-.") or "app"
    return os.path.join(base, "bgjobs", f"{name[:40]}-{hashlib.sha256(key).hexdigest()[:10]}")


def get_app_environment(env: Optional[Env] = None) -> str:
    """The app environment, lower-cased: ``BGJOBS_ENV``, else ``APP_ENV``, else on Vercel
    ``VERCEL_ENV``, else ``"development"``.

    Without a secret the HTTP endpoints are open only in ``development``, so a deployed
    Vercel function must never count as one by default: on Vercel (``VERCEL=1`` or
    ``VERCEL_ENV`` set) the environment is ``VERCEL_ENV`` (``production``, ``preview``,
    ``development`` under ``vercel dev``), and ``production`` when Vercel did not say.
    ``BGJOBS_ENV``/``APP_ENV`` may still name it (``staging``), but saying ``development``
    on a deployment whose ``VERCEL_ENV`` is anything else is a ``ValueError`` naming both.
    """
    source = os.environ if env is None else env
    vercel_env = _get(source, "VERCEL_ENV")
    on_vercel = vercel_env is not None or _get(source, "VERCEL") == "1"
    for name in ("BGJOBS_ENV", "APP_ENV"):
        explicit = _get(source, name)
        if explicit is None:
            continue
        environment = explicit.lower()
        if (
            environment == "development"
            and vercel_env is not None
            and vercel_env.lower() != "development"
        ):
            raise ValueError(
                f"{name}={explicit!r} contradicts VERCEL_ENV={vercel_env!r}: a Vercel "
                f"{vercel_env.lower()} deployment is not the development environment (whose "
                f"endpoints run without a secret); unset {name}, or set BGJOBS_ENV to "
                f"{vercel_env.lower()!r}"
            )
        return environment
    if on_vercel:
        return (vercel_env or "production").lower()
    return "development"


def get_trigger_dev_config(env: Optional[Env] = None) -> TriggerDevConfig:
    """Trigger.dev settings.

    ``TRIGGER_DEV_ENABLED`` (1/true/yes/on), ``TRIGGER_DEV_API_KEY`` (else
    ``TRIGGER_SECRET_KEY``), ``TRIGGER_DEV_API_URL`` (else ``TRIGGER_API_URL``, default
    ``https://api.trigger.dev``), ``TRIGGER_DEV_ENVIRONMENT`` (development | staging |
    production | preview; default: the environment the key's prefix names, else
    development). An unknown environment, or one the key contradicts, makes the config not
    fully configured (it ends up in every schedule's deduplication key, so a mistake must
    not be used); the factory warns about it and the Trigger.dev manager refuses it by
    name. The branch (``x-trigger-branch``) of a preview key is ``TRIGGER_PREVIEW_BRANCH``,
    else ``VERCEL_GIT_COMMIT_REF``; of a development key ``TRIGGER_DEV_BRANCH`` (as the
    Trigger.dev SDK reads them; ``default`` means none).
    """
    source = os.environ if env is None else env
    enabled_raw = _get(source, "TRIGGER_DEV_ENABLED")
    api_key = _get(source, "TRIGGER_DEV_API_KEY", "TRIGGER_SECRET_KEY")
    api_url_raw = _get(source, "TRIGGER_DEV_API_URL", "TRIGGER_API_URL")
    environment_raw = _get(source, "TRIGGER_DEV_ENVIRONMENT")
    given = any(v is not None for v in (enabled_raw, api_key, api_url_raw, environment_raw))
    environment = (environment_raw or key_environment(api_key) or "development").lower()
    branch: Optional[str] = None
    if environment == "preview":
        branch = _get(source, "TRIGGER_PREVIEW_BRANCH", "VERCEL_GIT_COMMIT_REF")
    elif environment == "development":
        branch = _get(source, "TRIGGER_DEV_BRANCH")
        branch = None if branch == "default" else branch
    return TriggerDevConfig(
        enabled=is_truthy(enabled_raw),
        api_key=api_key,
        api_url=(api_url_raw or DEFAULT_TRIGGER_DEV_API_URL).rstrip("/"),
        environment=environment,
        settings_given=given,
        branch=branch.strip() if branch else None,
    )


def should_use_trigger_dev(env: Optional[Env] = None) -> bool:
    """Fully configured, enabled, and the app environment is ``production``."""
    source = os.environ if env is None else env
    return _uses_trigger_dev(get_trigger_dev_config(source), get_app_environment(source))


def _uses_trigger_dev(config: TriggerDevConfig, app_environment: str) -> bool:
    return config.enabled and config.is_fully_configured and app_environment == "production"


def get_scheduling_mode(env: Optional[Env] = None) -> SchedulingMode:
    """The runtime to use; the first rule that matches wins.

    1. ``BGJOBS_MODE`` when set (an empty value counts as unset; an unknown one is a
       ``ValueError`` naming it);
    2. ``disabled`` when ``DISABLE_AUTO_SYNC`` is 1/true/yes/on;
    3. ``trigger-dev`` when :func:`should_use_trigger_dev`;
    4. ``vercel`` when ``VERCEL=1``;
    5. ``local``.
    """
    source = os.environ if env is None else env
    return _mode(
        _get(source, "BGJOBS_MODE"),
        disabled=is_truthy(_get(source, "DISABLE_AUTO_SYNC")),
        trigger_dev=should_use_trigger_dev(source),
        vercel=_get(source, "VERCEL") == "1",
    )


def _mode(
    forced: Optional[str], *, disabled: bool, trigger_dev: bool, vercel: bool
) -> SchedulingMode:
    if forced is not None:
        mode = forced.lower()
        if mode not in MODES:
            raise ValueError(f"BGJOBS_MODE={forced!r} is not one of {', '.join(MODES)}")
        return mode
    if disabled:
        return "disabled"
    if trigger_dev:
        return "trigger-dev"
    if vercel:
        return "vercel"
    return "local"


@dataclass(frozen=True)
class Settings:
    """Every setting bgjobs reads, parsed once (see the table in the module doc).

    Build it with :meth:`from_env`; change a copy with :meth:`replace`. Values that only
    matter to one runtime are validated when that runtime is built (:meth:`from_env` never
    fails for a key the chosen mode does not use), except the numeric settings and an app
    environment of ``development`` on a Vercel deployment (:func:`get_app_environment`),
    which fail here with an error naming the key. The secrets are kept out of ``repr``.
    """

    forced_mode: Optional[str] = None
    """``BGJOBS_MODE`` as given (validated by :attr:`mode`)."""
    app_environment: str = "development"
    disable_auto_sync: bool = False
    vercel: bool = False
    timezone: Optional[str] = None
    """``BGJOBS_TIMEZONE``: an IANA name; ``None`` means UTC."""
    state_dir: Optional[str] = None
    """``BGJOBS_STATE_DIR``/``BGJOBS_LOCK_DIR``: a path; ``""``: off; ``None``: unset (the
    default applies where an app is wired, see :meth:`with_default_state_dir`)."""
    max_workers: int = DEFAULT_MAX_WORKERS
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    secret: Optional[str] = field(default=None, repr=False)
    """``BGJOBS_SECRET``, else ``CRON_SECRET``; whitespace-only counts as unset."""
    url_prefix: str = DEFAULT_PREFIX
    """Normalised: ``"/api/cron"``, or ``""`` for the root."""
    autostart: bool = True
    trigger_dev: TriggerDevConfig = field(default_factory=TriggerDevConfig)
    task_id: str = DEFAULT_TASK_ID
    trigger_dev_max_attempts: int = DEFAULT_TRIGGER_DEV_MAX_ATTEMPTS
    trigger_dev_register_on_start: bool = True
    """``TRIGGER_DEV_REGISTER_ON_START``: register schedules in the background when jobs
    are scheduled (off: only ``sync()``/``bgjobs sync``, the deploy step, registers)."""
    trigger_dev_registry_stamp: bool = True
    """``TRIGGER_DEV_REGISTRY_STAMP``: keep the registry stamp on Trigger.dev, so start-up
    registration skips what is registered and never puts an older schedule back."""
    history_runs: int = DEFAULT_HISTORY_RUNS
    """Runs kept per job in the state store (``BGJOBS_HISTORY_RUNS``)."""
    history_days: int = DEFAULT_HISTORY_DAYS
    """Days a run is kept in the state store (``BGJOBS_HISTORY_DAYS``)."""

    @classmethod
    def from_env(cls, env: Optional[Env] = None) -> Settings:
        """Read every key from ``env`` (default ``os.environ``), once."""
        source = os.environ if env is None else env
        return cls(
            forced_mode=_get(source, "BGJOBS_MODE"),
            app_environment=get_app_environment(source),
            disable_auto_sync=is_truthy(_get(source, "DISABLE_AUTO_SYNC")),
            vercel=_get(source, "VERCEL") == "1",
            timezone=_get(source, "BGJOBS_TIMEZONE"),
            state_dir=state_dir_setting(source),
            max_workers=_whole_number(source, "BGJOBS_MAX_WORKERS", DEFAULT_MAX_WORKERS),
            shutdown_timeout=_shutdown_timeout(source),
            secret=_get(source, "BGJOBS_SECRET", "CRON_SECRET"),
            url_prefix=normalize_prefix(_get(source, "BGJOBS_URL_PREFIX") or DEFAULT_PREFIX),
            autostart=_flag(source, "BGJOBS_AUTOSTART", True),
            trigger_dev=get_trigger_dev_config(source),
            task_id=_get(source, "TRIGGER_DEV_TASK_ID") or DEFAULT_TASK_ID,
            history_runs=_whole_number(source, "BGJOBS_HISTORY_RUNS", DEFAULT_HISTORY_RUNS),
            history_days=_whole_number(source, "BGJOBS_HISTORY_DAYS", DEFAULT_HISTORY_DAYS),
            trigger_dev_max_attempts=_whole_number(
                source, "TRIGGER_DEV_MAX_ATTEMPTS", DEFAULT_TRIGGER_DEV_MAX_ATTEMPTS
            ),
            trigger_dev_register_on_start=_flag(source, "TRIGGER_DEV_REGISTER_ON_START", True),
            trigger_dev_registry_stamp=_flag(source, "TRIGGER_DEV_REGISTRY_STAMP", True),
        )

    @classmethod
    def coerce(cls, settings: Optional[Settings], env: Optional[Env] = None) -> Settings:
        """``settings`` if given, else :meth:`from_env` of ``env`` (for ``env=`` arguments)."""
        return settings if settings is not None else cls.from_env(env)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (field names as above)."""
        return replace(self, **changes)

    @property
    def lock_dir(self) -> Optional[str]:
        """The state directory in use, or ``None`` when off or unset."""
        return self.state_dir or None

    def with_default_state_dir(self, app: Optional[str] = None) -> Settings:
        """These settings, with :func:`default_state_dir` when no state directory is set
        (an explicit ``""`` stays off)."""
        if self.state_dir is not None:
            return self
        return self.replace(state_dir=default_state_dir(app))

    @property
    def mode(self) -> SchedulingMode:
        """The runtime to use, by the rules of :func:`get_scheduling_mode`."""
        return _mode(
            self.forced_mode,
            disabled=self.disable_auto_sync,
            trigger_dev=_uses_trigger_dev(self.trigger_dev, self.app_environment),
            vercel=self.vercel,
        )
