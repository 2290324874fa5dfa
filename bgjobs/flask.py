"""Flask integration: one manager per app, the HTTP endpoints on a blueprint, jobs in context.

::

    from flask import Flask
    from bgjobs.flask import BGJobs, get_manager
    from myapp.jobs import jobs          # a bgjobs.JobRegistry

    bgjobs = BGJobs(registry=jobs)

    def create_app():
        app = Flask(__name__)
        app.config["BGJOBS_SECRET"] = "..."      # or BGJOBS_SECRET / CRON_SECRET in the env
        bgjobs.init_app(app)
        return app

    # later, anywhere in the app:  get_manager().get_all_job_statuses()

``init_app`` builds the app's own manager with :func:`bgjobs.factory.create_job_manager`
(not the process-wide singleton), mounts :mod:`bgjobs.wsgi`'s endpoints on a blueprint
named ``bgjobs`` at ``BGJOBS_URL_PREFIX``, runs every job inside ``app.app_context()`` (so
a job may use ``current_app``, extensions and ``g``; each run gets a fresh ``g``), and
schedules the registry's jobs once. State lives in ``app.extensions["bgjobs"]``; calling
``init_app`` twice on one app is an error.

Configuration — each key is read from ``app.config``, else from the environment, else the
default; after ``init_app`` the keys with a default hold their effective value. A value of
``None`` in ``app.config`` means "not set here".

=======================  =====================================================================
``BGJOBS_URL_PREFIX``    where the endpoints live; default ``"/api/cron"``
``BGJOBS_SECRET``        the endpoints' Bearer secret; default ``None`` → ``CRON_SECRET``; with
                         neither, only the development app environment is served
``BGJOBS_MODE``          ``local``/``trigger-dev``/``vercel``/``disabled``; default ``None``:
                         chosen by :func:`bgjobs.config.get_scheduling_mode`
``BGJOBS_STATE_DIR``     local mode: the state directory, so one process per host runs each
                         fire and every process shows the same statuses and history (see
                         the README, "gunicorn"); default ``<app.instance_path>/bgjobs``;
                         ``None``/``""``/``False`` in ``app.config``: every process runs
                         them, in memory. ``BGJOBS_LOCK_DIR`` is its older name
``BGJOBS_AUTOSTART``     schedule the registry's jobs in ``init_app``; default ``True``;
                         when false, call :meth:`BGJobs.start` yourself
=======================  =====================================================================

These are passed on to the configuration readers the same way (``app.config`` over the
environment): ``BGJOBS_ENV``/``APP_ENV`` (app environment; on Vercel ``VERCEL_ENV``),
``BGJOBS_TIMEZONE``, ``CRON_SECRET``, ``DISABLE_AUTO_SYNC``, ``VERCEL``,
``TRIGGER_DEV_ENABLED``, ``TRIGGER_DEV_API_KEY``/``TRIGGER_SECRET_KEY``,
``TRIGGER_DEV_API_URL``/``TRIGGER_API_URL``, ``TRIGGER_DEV_ENVIRONMENT``,
``TRIGGER_DEV_TASK_ID`` — in short every ``BGJOBS_*`` and ``TRIGGER_*`` key plus the five
names above.

The debug reloader (``flask run --debug``) runs the app in two processes. Jobs are
scheduled only in the reloader's child, which serves requests
(:func:`werkzeug.serving.is_running_from_reloader`); in debug mode without that marker —
the reloader's parent, or ``--no-reload`` — they are scheduled on the first request, which
the parent never gets. ``app.run(debug=True)`` decides debug mode after ``init_app`` has
run, so set ``app.debug = True`` (or ``FLASK_DEBUG=1``) before ``init_app`` there.

The command line's commands are also ``flask bgjobs`` commands, with the app as APP (see
:mod:`bgjobs.cli`; the same handlers, arguments and exit statuses). Flask finds them
through the ``flask.commands`` entry point (:mod:`bgjobs._cli.flask_commands`), not on
``app.cli``, so that importing this module never loads the command line::

    flask --app myapp bgjobs list                  # jobs, schedules, next fire times
    flask --app myapp bgjobs exec repository-sync  # run one job now, in the app context
    flask --app myapp bgjobs run --duration 60     # schedule locally, show runs as they happen
    flask --app myapp bgjobs sync --prune          # register the schedules with Trigger.dev
    flask --app myapp bgjobs vercel-json           # the "crons" array for vercel.json

``bgjobs exec``/``run`` outside Flask reach the same app with APP ``myapp:create_app``
(or ``myapp:app``): every run happens inside ``app.app_context()`` there too.

A CSRF extension must exempt the blueprint (``csrf.exempt(get_state(app).blueprint)``):
the dispatch endpoint takes POSTs from schedulers, authenticated by the Bearer secret.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Any, Dict, Optional

from flask import Blueprint, Flask, current_app, has_app_context, request
from flask import Response as FlaskResponse
from werkzeug.serving import is_running_from_reloader

from .config import DEFAULT_PREFIX, Settings, is_truthy, state_dir_setting
from .execution import BaseJobManager
from .factory import create_job_manager
from .registry import JobRegistry
from .types import BackgroundJobManager
from .wsgi import Endpoints

if TYPE_CHECKING:
    from flask.blueprints import BlueprintSetupState

__all__ = ["EXTENSION_KEY", "BGJobs", "BGJobsState", "get_manager", "get_state"]

logger = logging.getLogger(__name__)

EXTENSION_KEY = "bgjobs"
"""The key of this extension's state in ``app.extensions``."""

_ENV_PREFIXES = ("BGJOBS_", "TRIGGER_")
_ENV_NAMES = frozenset({"APP_ENV", "CRON_SECRET", "DISABLE_AUTO_SYNC", "VERCEL", "VERCEL_ENV"})


def _is_setting(key: str) -> bool:
    return key.startswith(_ENV_PREFIXES) or key in _ENV_NAMES


def _flag(value: object, default: bool) -> bool:
    """``None``/``""`` → ``default``; otherwise booleans and 1/true/yes/on."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return is_truthy(value)


class BGJobsState:
    """What :class:`BGJobs` keeps per app, in ``app.extensions["bgjobs"]``.

    The command line reads ``registry``, ``manager`` and ``settings`` from it by name
    (:class:`bgjobs._cli.apps.ExtensionState`) without importing this module: keep them.
    """

    def __init__(
        self,
        extension: BGJobs,
        manager: BackgroundJobManager,
        registry: Optional[JobRegistry],
        endpoints: Endpoints,
        blueprint: Blueprint,
        settings: Settings,
    ) -> None:
        self.extension = extension
        self.manager = manager
        self.registry = registry
        self.endpoints = endpoints
        self.blueprint = blueprint
        #: The settings the manager and the endpoints were built from (app.config over
        #: the environment).
        self.settings = settings
        # A fast path for the first-request hook; registry.apply_once is the real guard.
        self.started = False

    def start(self) -> bool:
        """Schedule the registry's jobs on the manager unless done; ``True`` if this call did."""
        did = self.registry is not None and self.registry.apply_once(self.manager)
        self.started = True  # not reached if scheduling raised: the next call retries
        if did:
            logger.info("bgjobs: scheduled %d job(s) on %r", len(self.registry or ()), self.manager)
        return did

    def __repr__(self) -> str:
        return f"<BGJobsState manager={self.manager!r} started={self.started}>"


def get_state(app: Optional[Flask] = None) -> BGJobsState:
    """The extension's state for ``app`` (default: the current app).

    Raises ``RuntimeError`` outside an app context without ``app``, or when ``BGJobs`` is
    not set up on the app.
    """
    if app is None:
        if not has_app_context():
            raise RuntimeError(
                "bgjobs: no Flask app context; pass the app (get_manager(app)) or call "
                "this inside 'with app.app_context():'"
            )
        extensions = current_app.extensions
    else:
        extensions = app.extensions
    state = extensions.get(EXTENSION_KEY)
    if not isinstance(state, BGJobsState):
        raise RuntimeError(
            "bgjobs: BGJobs is not set up on this Flask app; call BGJobs(app) or "
            "ext.init_app(app) first"
        )
    return state


def get_manager(app: Optional[Flask] = None) -> BackgroundJobManager:
    """The job manager of ``app`` (default: the current app)."""
    return get_state(app).manager


class BGJobs:
    """The Flask extension: ``BGJobs(app, registry=jobs)`` or ``BGJobs(registry=jobs)`` and
    :meth:`init_app` later (app factories). See the module doc for configuration.

    One instance may serve several apps; each app gets its own manager.
    """

    def __init__(self, app: Optional[Flask] = None, *, registry: Optional[JobRegistry] = None):
        self.registry = registry
        # Weak: only so that ext.manager works outside an app context when there is
        # exactly one app; the extension never keeps an app alive.
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, registry: Optional[JobRegistry] = None) -> None:
        """Set bgjobs up on ``app``: manager, run context, blueprint and (autostart) jobs.

        ``registry`` overrides the one given to the constructor. Raises ``RuntimeError``
        if ``app`` already has bgjobs set up.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "bgjobs: BGJobs is already set up on this Flask app (app.extensions"
                "['bgjobs']); call init_app once per app, and reach its manager with "
                "bgjobs.flask.get_manager(app)"
            )
        registry = registry if registry is not None else self.registry
        environ = {k: v for k, v in os.environ.items() if _is_setting(k)}
        config = app.config
        config.setdefault("BGJOBS_URL_PREFIX", environ.get("BGJOBS_URL_PREFIX") or DEFAULT_PREFIX)
        config.setdefault("BGJOBS_SECRET", None)
        config.setdefault("BGJOBS_MODE", None)
        # app.config's value, else the environment's, else the instance folder ("" is off).
        chosen = state_dir_setting(config)
        if chosen is None:
            chosen = state_dir_setting(environ)
        state_dir = os.path.join(app.instance_path, "bgjobs") if chosen is None else chosen
        config.setdefault("BGJOBS_AUTOSTART", _flag(environ.get("BGJOBS_AUTOSTART"), True))

        env: Dict[str, Any] = dict(environ)
        env.update((k, v) for k, v in config.items() if v is not None and _is_setting(k))
        env.pop("BGJOBS_LOCK_DIR", None)
        # "" is off: neither the environment's value nor the default applies then.
        env["BGJOBS_STATE_DIR"] = state_dir

        settings = Settings.from_env(env)
        if settings.mode != "local" and not chosen:
            # The instance folder is the default for the local runtime only: a Vercel
            # function's is read-only, and a remote runtime gets a store when asked for one.
            settings = settings.replace(state_dir="")
        config.setdefault("BGJOBS_STATE_DIR", settings.lock_dir)
        config.setdefault("BGJOBS_LOCK_DIR", settings.lock_dir)  # the older name, the same
        manager = create_job_manager(settings=settings)
        if isinstance(manager, BaseJobManager):
            # The real app object, not current_app: timer threads have no context to proxy.
            manager.set_run_context(app.app_context)
        endpoints = Endpoints(manager, settings=settings)
        blueprint = _blueprint(endpoints, settings.url_prefix)
        app.register_blueprint(blueprint)

        state = BGJobsState(self, manager, registry, endpoints, blueprint, settings)
        app.extensions[EXTENSION_KEY] = state
        self._apps.add(app)

        if not _flag(config["BGJOBS_AUTOSTART"], True):
            return
        if app.debug and not is_running_from_reloader():
            # Perhaps the reloader's parent, which never serves: wait for a request.
            def _start_on_first_request() -> None:
                if not state.started:
                    state.start()

            app.before_request(_start_on_first_request)
        else:
            state.start()

    def start(self, app: Optional[Flask] = None) -> bool:
        """Schedule the registry's jobs now (with ``BGJOBS_AUTOSTART = False``); idempotent.

        Returns ``True`` if this call scheduled them.
        """
        return self._state(app).start()

    def _state(self, app: Optional[Flask]) -> BGJobsState:
        if app is None and not has_app_context():
            apps = list(self._apps)
            if len(apps) != 1:
                raise RuntimeError(
                    f"bgjobs: this BGJobs is set up on {len(apps)} apps; outside an app "
                    "context, pass the app (get_manager(app))"
                )
            app = apps[0]
        return get_state(app)

    @property
    def manager(self) -> BackgroundJobManager:
        """The current app's manager (or the only app's, outside an app context)."""
        return self._state(None).manager

    def __repr__(self) -> str:
        return f"<BGJobs apps={len(self._apps)} registry={self.registry!r}>"


def _blueprint(endpoints: Endpoints, prefix: str) -> Blueprint:
    """A blueprint whose one view hands every request under ``prefix`` to ``endpoints``.

    Its rules accept every method (``methods=None``), which ``add_url_rule`` cannot
    express, so that :meth:`Endpoints.handle` answers 405 with ``Allow`` for any method
    in the same JSON shape as the bare WSGI app.
    """
    blueprint = Blueprint(EXTENSION_KEY, __name__)

    def view(rest: str = "") -> FlaskResponse:
        prefer = request.headers.getlist("Prefer")
        answer = endpoints.handle(
            request.method,
            f"/{rest}",
            authorization=request.headers.get("Authorization"),
            token=request.args.get("token"),
            idempotency_key=request.headers.get("Idempotency-Key"),
            prefer=", ".join(prefer) if prefer else None,
            limit=request.args.get("limit"),
            base=request.script_root + prefix,
            scheduled_for=request.headers.get("Bgjobs-Scheduled-For"),
            previous_fire=request.headers.get("Bgjobs-Previous-Fire"),
        )
        return FlaskResponse(answer.body, status=answer.status, headers=list(answer.headers))

    def mount(setup: BlueprintSetupState) -> None:
        endpoint = f"{setup.name_prefix}.{setup.name}.endpoint".lstrip(".")
        setup.app.view_functions[endpoint] = view
        rules = [prefix] if prefix else []  # "<prefix>" itself, besides "<prefix>/"
        rules += [f"{prefix}/", f"{prefix}/<path:rest>"]
        for rule in rules:
            setup.app.url_map.add(setup.app.url_rule_class(rule, endpoint=endpoint, methods=None))

    blueprint.record_once(mount)
    return blueprint
