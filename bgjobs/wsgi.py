"""The HTTP endpoints, as a framework-free WSGI app: dispatch, status JSON, an HTML page.

Vercel Cron, the Trigger.dev dispatcher task and monitoring tools talk to these; the Flask
extension (:mod:`bgjobs.flask`) mounts the very same :class:`Endpoints` on a blueprint.
Standard library only, so any WSGI server or framework can host them::

    # myapp/wsgi.py — served with:  gunicorn myapp.wsgi:app
    from bgjobs import initialize_background_jobs
    from bgjobs.wsgi import create_app
    from myapp.jobs import jobs

    manager = initialize_background_jobs(jobs)
    app = create_app(manager)          # /api/cron/..., secret from BGJOBS_SECRET/CRON_SECRET

    # ... or next to another WSGI app. DispatcherMiddleware strips the mount point from
    # PATH_INFO, so the endpoints' own prefix is then "":
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    app = DispatcherMiddleware(website, {"/api/cron": create_app(manager, prefix="")})

Endpoints, under ``prefix`` (default ``/api/cron``; matched against ``PATH_INFO``):

================================  ===========  =============================================
``<prefix>/status``               GET, HEAD    ``{"jobs": [<job>, ...], "metrics": {...}}``
``<prefix>/metrics``              GET, HEAD    the same in Prometheus' text format 0.0.4
``<prefix>/<job id>``             GET, POST    run the job now (dispatch); 200 with ``<job>``
                                               plus ``"run": <run>``
``<prefix>/<job id>/runs``        GET, HEAD    ``{"job_id": ..., "runs": [<run>, ...]}``,
                                               newest first; ``?limit=`` 1..100 (20)
``<prefix>/runs/<run id>``        GET, HEAD    ``<run>``
``<prefix>/<job id>/pause``       POST         pause the job (host-wide with a state store);
                                               200 with ``<job>``
``<prefix>/<job id>/resume``      POST         resume it; 200 with ``<job>``
``<prefix>/`` (``<prefix>``)       GET, HEAD    an HTML status page that refreshes every 5 s
================================  ===========  =============================================

``<job>`` is :meth:`bgjobs.types.JobStatus.to_dict` — snake_case keys, ISO 8601 UTC
timestamps — the same object in ``/status`` and in a dispatch answer; ``<run>`` is
:meth:`bgjobs.types.JobRun.to_dict`. A dispatch answers 200 once the job has run, *also
when it failed* (``"status": "failed"``, ``"error"`` set); 404 for an unknown id, 409 when
it is already running, is paused, or is stopped in this process (the job is not run). The
job runs in the request's thread, so the answer waits for it: give the server a timeout
longer than the job — or ask for an asynchronous answer:

* ``Prefer: respond-async`` (RFC 7240): the run starts off the request's thread and the
  answer is ``202`` with the ``<run>`` (``"outcome": "running"``), ``Location:
  <prefix>/runs/<run id>`` to poll, and ``Preference-Applied: respond-async``.
* ``Idempotency-Key: K`` (1 to 255 printable ASCII characters): the job runs at most once
  per ``K``, even for requests arriving together. A repeat is not run again: it answers
  200 with ``<job>`` plus the ``"run"`` recorded under ``K`` (perhaps still running) and
  ``Idempotent-Replayed: true``; a key first used for another job answers 422.
* ``Bgjobs-Scheduled-For: T`` and ``Bgjobs-Previous-Fire: P`` (ISO 8601 with an offset;
  the Trigger.dev dispatcher sends them; a bad value answers 400): ``T`` becomes the run's
  ``scheduled_for``; a previous fire ``P`` that never reached the app is logged (WARNING)
  and counted as one skip of the job, once (see :mod:`bgjobs._missed_fires`).

Both need a manager built on the execution core (every runtime bgjobs ships but the no-op
one), which records runs; elsewhere ``Prefer`` is ignored and ``Idempotency-Key`` refused
(501). ``status``, ``runs`` and ``metrics`` are not usable job ids here.

Every error answer has one shape, ``{"error": {"status": 409, "message": "..."}}``; a 409
also carries ``"job": <job>``. Responses are ``application/json; charset=utf-8`` (the
page ``text/html``, the metrics ``text/plain; version=0.0.4``) with ``Cache-Control:
no-store``. Other methods get 405 with ``Allow``; paths outside the prefix get 404.

Authentication: ``Authorization: Bearer <secret>``, compared in constant time. The secret is
the ``secret`` argument, else ``BGJOBS_SECRET``, else ``CRON_SECRET`` (the variable Vercel
sets) from ``env`` (default ``os.environ``); an empty or whitespace-only value, the
argument's as the environment's, counts as unset, and surrounding whitespace is dropped.
It guards every endpoint. With no secret configured, requests are accepted only while
the app environment (``BGJOBS_ENV``/``APP_ENV``, on Vercel ``VERCEL_ENV``:
:func:`bgjobs.config.get_app_environment`) is ``development``; elsewhere — a Vercel
production or preview deployment included — they get 401 saying a secret must be
configured. Because a browser cannot send a Bearer header, the HTML page — and only the
page — also accepts ``?token=<secret>``; the token then sits in the browser history and in
access logs, so use it on trusted networks. The secret is never put in a response or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import parse_qs, quote

from ._web.page import PAGE_REFRESH_SECONDS as PAGE_REFRESH_SECONDS  # re-exported
from ._web.page import render_status_page
from ._web.prometheus import PROMETHEUS_TYPE, render_metrics
from .config import DEFAULT_PREFIX, Settings, normalize_prefix
from .errors import JobNotFoundError
from .execution import BaseJobManager, DispatchResult
from .registry import RESERVED_JOB_IDS
from .types import BackgroundJobManager, JobRun, JobStatus, RunTrigger

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "DEFAULT_PREFIX",
    "RESERVED_PATHS",
    "PREVIOUS_FIRE_HEADER",
    "RETRIES_HEADER",
    "SCHEDULED_FOR_HEADER",
    "Endpoints",
    "Response",
    "WSGIApp",
    "create_app",
    "dispatch",
    "normalize_prefix",
    "render_status_page",
]
# render_status_page and PAGE_REFRESH_SECONDS live in bgjobs._web.page now and stay
# importable from here.

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"

_STATUS_ALLOW = ("GET", "HEAD", "OPTIONS")
_DISPATCH_ALLOW = ("GET", "POST", "OPTIONS")
_CONTROL_ALLOW = ("POST", "OPTIONS")

RESERVED_PATHS = RESERVED_JOB_IDS  # no job may have these ids (checked at declaration)
"""First path segments that are endpoints, never job ids (declaring such a job fails)."""

RUNS_LIMIT_DEFAULT = 20
RUNS_LIMIT_MAX = 100
IDEMPOTENCY_KEY_MAX = 255
SCHEDULED_FOR_HEADER = "Bgjobs-Scheduled-For"
PREVIOUS_FIRE_HEADER = "Bgjobs-Previous-Fire"
RETRIES_HEADER = "X-BGJobs-Retries"
"""On a dispatch's 200 answer, for a job declared with ``retries=N``: N. The Trigger.dev
dispatcher task fails the run for good (no retry) after attempt N + 1 of a failed job."""
# Printable ASCII, inner spaces allowed (the server strips the value's outer whitespace).
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_DIGITS = re.compile(r"[0-9]+")
_COMMON_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
)
# The page needs nothing but its own inline CSS; say so, so nothing else can run in it.
_PAGE_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'",
    ),
    ("Referrer-Policy", "no-referrer"),
)


@dataclass(frozen=True)
class Response:
    """A framework-neutral answer: status code, headers and the full body."""

    status: int
    headers: Tuple[Tuple[str, str], ...]
    body: bytes

    @property
    def status_line(self) -> str:
        """``"200 OK"``, as WSGI's ``start_response`` wants it."""
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def _response(
    status: int, content_type: str, body: bytes, extra: Iterable[Tuple[str, str]] = ()
) -> Response:
    headers = (
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        *_COMMON_HEADERS,
        *extra,
    )
    return Response(status, headers, body)


def _json(
    status: int, payload: Mapping[str, Any], extra: Iterable[Tuple[str, str]] = ()
) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return _response(status, JSON_TYPE, body, extra)


def _error(
    status: int,
    message: str,
    *,
    job: Optional[JobStatus] = None,
    extra: Iterable[Tuple[str, str]] = (),
) -> Response:
    payload: Dict[str, Any] = {"error": {"status": status, "message": message}}
    if job is not None:
        payload["job"] = job.to_dict()
    return _json(status, payload, extra)


def dispatch(
    manager: BackgroundJobManager,
    job_id: str,
    *,
    run_key: Optional[str] = None,
    trigger: RunTrigger = "http",
    background: bool = False,
    scheduled_for: Optional[datetime] = None,
    previous_fire: Optional[datetime] = None,
) -> DispatchResult:
    """Run ``job_id`` for a remote scheduler; what happened, the status afterwards, the run.

    Uses :meth:`BaseJobManager.dispatch` for every manager built on the execution core
    (``run_key``: at most one run per key; ``background``: start the run off this thread
    and answer ``"accepted"`` at once; ``scheduled_for``/``previous_fire``: this and the
    previous fire of a remote schedule, for missed-fire reports). For any other
    :class:`BackgroundJobManager` — e.g. the no-op one — falls back to
    :meth:`~BackgroundJobManager.get_job_status` plus
    :meth:`~BackgroundJobManager.trigger_job` with the same rules (a stopped or paused job
    is not run); that runs in the calling thread, records no run (``run`` is ``None``),
    ignores the fire times and cannot honour ``run_key``: it raises ``ValueError`` if
    given one for a known job.
    """
    if isinstance(manager, BaseJobManager):
        return manager.dispatch(
            job_id,
            run_key=run_key,
            trigger=trigger,
            background=background,
            scheduled_for=scheduled_for,
            previous_fire=previous_fire,
        )
    status = manager.get_job_status(job_id)
    if status is None:
        return DispatchResult("not_found", None)
    if run_key is not None:
        raise ValueError(
            f"{type(manager).__name__} keeps no run records, so it cannot run job "
            f"{job_id!r} at most once per key; use a manager built on the execution core"
        )
    if status.status in ("stopped", "paused"):
        return DispatchResult(status.status, status)
    try:
        ran = manager.trigger_job(job_id)
    except JobNotFoundError:  # removed between the two calls
        return DispatchResult("not_found", None)
    return DispatchResult("ran" if ran else "busy", manager.get_job_status(job_id) or status)


def wants_async(prefer: Optional[str]) -> bool:
    """Whether a ``Prefer`` header value (RFC 7240) asks for ``respond-async``.

    Preferences are comma-separated, each ``token [= value] *(; parameter)``; the token
    is case-insensitive and commas inside quoted strings do not separate.
    """
    if not prefer:
        return False
    return any(_preference_token(item) == "respond-async" for item in _split_unquoted(prefer, ","))


def _split_unquoted(text: str, separator: str) -> List[str]:
    parts: List[str] = []
    current: List[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _preference_token(preference: str) -> str:
    head = preference.split(";", 1)[0]
    return head.split("=", 1)[0].strip().lower()


def _runs_limit(text: Optional[str]) -> Optional[int]:
    """``?limit=`` as a number in 1..100 (absent: the default); ``None`` when invalid."""
    if text is None:
        return RUNS_LIMIT_DEFAULT
    if not _DIGITS.fullmatch(text) or len(text) > 3 or not 1 <= int(text) <= RUNS_LIMIT_MAX:
        return None
    return int(text)


def _with_run(status: JobStatus, run: Optional[JobRun]) -> Dict[str, Any]:
    """A dispatch's 200 body: the job's status plus ``"run"`` (``None``: none recorded)."""
    return {**status.to_dict(), "run": run.to_dict() if run is not None else None}


def _store_state(health: Optional[Mapping[str, Any]]) -> str:
    """``shared`` (host-wide), ``degraded; <why and the fix>`` or ``memory`` (no store)."""
    if health is None:
        return "memory"
    if health.get("degraded"):
        reason = " ".join(str(health["degraded"]).split())
        return "degraded; " + reason.encode("ascii", "replace").decode("ascii")[:300]
    return "shared"


def _header_time(text: Optional[str]) -> Optional[datetime]:
    """An ISO 8601 time with an offset (``Z`` too) as UTC; ``None`` if absent or not one."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(timezone.utc) if parsed.tzinfo is not None else None


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _header_bytes(value: str) -> bytes:
    # WSGI (PEP 3333) hands headers over as latin-1 decoded bytes; undo that exactly.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _bearer_token(authorization: Optional[str]) -> Optional[bytes]:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return _header_bytes(token.strip())


class Endpoints:
    """The endpoints, independent of any framework: one request in, one :class:`Response` out.

    :class:`WSGIApp` and the Flask blueprint both call :meth:`handle`; neither has
    endpoint logic of its own. The secret and the app environment are read once, here.
    """

    def __init__(
        self,
        manager: BackgroundJobManager,
        *,
        secret: Optional[str] = None,
        settings: Optional[Settings] = None,
        env: Optional[Mapping[str, Any]] = None,
    ) -> None:
        settings = Settings.coerce(settings, env)
        self.manager = manager
        if secret is not None and not secret.strip():
            logger.warning(
                "bgjobs endpoints: the secret given is blank (whitespace only), which counts "
                "as no secret, as it does in BGJOBS_SECRET/CRON_SECRET"
            )
        # Stripped like the environment's value and the Bearer token, so a blank one is
        # unset everywhere and no token of spaces can match it.
        secret = secret.strip() if secret is not None and secret.strip() else settings.secret
        # Only a digest of the secret is kept: nothing here can print the secret itself.
        self._secret = _digest(secret.encode("utf-8")) if secret else None
        self._environment = settings.app_environment
        if self._secret is None and self._environment == "development":
            logger.warning(
                "bgjobs endpoints accept requests without a secret because the app "
                "environment is development; set BGJOBS_SECRET (or CRON_SECRET) elsewhere"
            )

    def __repr__(self) -> str:
        guarded = "secret" if self._secret is not None else f"open ({self._environment})"
        return f"<Endpoints {guarded} manager={self.manager!r}>"

    # -- the one entry point ------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        *,
        authorization: Optional[str] = None,
        token: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        prefer: Optional[str] = None,
        limit: Optional[str] = None,
        base: str = "",
        scheduled_for: Optional[str] = None,
        previous_fire: Optional[str] = None,
    ) -> Response:
        """Answer one request.

        ``path`` is the part after the prefix, already URL-decoded: ``""`` or ``"/"``
        (the page), ``"/status"``, ``"/metrics"``, ``"/runs/<run id>"``, ``"/<job id>"`` or
        ``"/<job id>/runs|pause|resume"``. ``authorization``, ``idempotency_key`` and
        ``prefer`` are the raw ``Authorization``, ``Idempotency-Key`` and ``Prefer``
        headers (``None`` when absent); ``token`` the page's ``?token=`` and ``limit``
        the ``?limit=`` query value, if any. ``base`` is the URL path of the prefix as the
        client sees it (mount point included), for ``Location``. ``scheduled_for`` and
        ``previous_fire`` are the raw ``Bgjobs-Scheduled-For`` and ``Bgjobs-Previous-Fire``
        headers the Trigger.dev dispatcher sends. A HEAD request gets the GET answer;
        stripping the body is the server's job.
        """
        method = method.upper()
        try:
            if path in ("", "/"):
                return self._route(method, _STATUS_ALLOW, authorization, token, self._page)
            segments = path[1:].split("/") if path.startswith("/") else [""]
            fires = (scheduled_for, previous_fire)
            view = self._view(segments, idempotency_key, prefer, limit, base, fires)
            if view is None:
                return _error(404, f"no bgjobs endpoint at {path!r}")
            allow, call = view
            return self._route(method, allow, authorization, None, call)
        except Exception:
            logger.error("bgjobs endpoint %s %r failed", method, path, exc_info=True)
            return _error(500, "internal error in the bgjobs endpoint (see the server log)")

    def _view(
        self,
        segments: List[str],
        idempotency_key: Optional[str],
        prefer: Optional[str],
        limit: Optional[str],
        base: str,
        fires: Tuple[Optional[str], Optional[str]] = (None, None),
    ) -> Optional[Tuple[Tuple[str, ...], Callable[[], Response]]]:
        """The allowed methods and the view for a path's segments; ``None``: no endpoint."""
        if any(not segment for segment in segments):
            return None
        first = segments[0]
        if len(segments) == 1:
            if first == "status":
                return _STATUS_ALLOW, self._status
            if first == "metrics":
                return _STATUS_ALLOW, self._metrics
            if first in RESERVED_PATHS:
                return None
            return _DISPATCH_ALLOW, lambda: self._dispatch(
                first, idempotency_key, prefer, base, fires
            )
        if len(segments) != 2:
            return None
        second = segments[1]
        if first == "runs":
            return _STATUS_ALLOW, lambda: self._run(second)
        if first in RESERVED_PATHS:
            return None
        if second == "runs":
            return _STATUS_ALLOW, lambda: self._runs(first, limit)
        if second == "pause":
            return _CONTROL_ALLOW, lambda: self._pause(first, pause=True)
        if second == "resume":
            return _CONTROL_ALLOW, lambda: self._pause(first, pause=False)
        return None

    def _route(
        self,
        method: str,
        allow: Tuple[str, ...],
        authorization: Optional[str],
        token: Optional[str],
        view: Callable[[], Response],
    ) -> Response:
        allow_header = ("Allow", ", ".join(allow))
        if method == "OPTIONS":
            return _response(204, "text/plain; charset=utf-8", b"", (allow_header,))
        if method not in allow:
            return _error(
                405,
                f"method {method} is not allowed here; use {' or '.join(allow[:-1])}",
                extra=(allow_header,),
            )
        refusal = self._authorize(authorization, token)
        if refusal is not None:
            return refusal
        return view()

    def _authorize(self, authorization: Optional[str], token: Optional[str]) -> Optional[Response]:
        """``None`` when the request may proceed, else the 401 answer."""
        challenge = (("WWW-Authenticate", 'Bearer realm="bgjobs"'),)
        if self._secret is None:
            if self._environment == "development":
                return None
            logger.warning(
                "bgjobs refused a request: no secret is configured and the app environment is %r",
                self._environment,
            )
            return _error(
                401,
                "no secret is configured: set BGJOBS_SECRET (or CRON_SECRET) to call these "
                f"endpoints; only the development environment runs without one (this is "
                f"{self._environment!r})",
                extra=challenge,
            )
        given = _bearer_token(authorization)
        if given is None and token and token.strip():
            given = token.strip().encode("utf-8")
        # Constant time, and on equal-length digests so that not even the length leaks.
        if given is not None and hmac.compare_digest(_digest(given), self._secret):
            return None
        logger.warning(
            "bgjobs refused a request: %s", "wrong secret" if given else "no secret given"
        )
        return _error(
            401,
            "missing or wrong secret: send 'Authorization: Bearer <secret>' with the value "
            "of BGJOBS_SECRET (or CRON_SECRET)",
            extra=challenge,
        )

    # -- views ----------------------------------------------------------------------------

    def _status(self) -> Response:
        # The body keeps the contract's two keys; the header says whose truth it is.
        return _json(
            200,
            {
                "jobs": [s.to_dict() for s in self.manager.get_all_job_statuses()],
                "metrics": self.manager.get_job_metrics().to_dict(),
            },
            (("Bgjobs-State-Store", _store_state(self._store_health())),),
        )

    def _store_health(self) -> Optional[Dict[str, Any]]:
        manager = self.manager
        return manager.store_health() if isinstance(manager, BaseJobManager) else None

    def _metrics(self) -> Response:
        text = render_metrics(
            self.manager.get_all_job_statuses(),
            self.manager.get_job_metrics(),
            self._store_health(),
        )
        return _response(200, PROMETHEUS_TYPE, text.encode("utf-8"))

    def _dispatch(
        self,
        job_id: str,
        idempotency_key: Optional[str],
        prefer: Optional[str],
        base: str,
        fires: Tuple[Optional[str], Optional[str]] = (None, None),
    ) -> Response:
        times: List[Optional[datetime]] = [None, None]
        if fires != (None, None):  # only the Trigger.dev dispatcher sends them
            names = (SCHEDULED_FOR_HEADER, PREVIOUS_FIRE_HEADER)
            for index, (name, text) in enumerate(zip(names, fires)):
                times[index] = when = _header_time(text)
                if text is not None and when is None:
                    return _error(
                        400,
                        f"the {name} header of the dispatch of job {job_id!r} must be an ISO "
                        f"8601 time with a UTC offset, e.g. 2026-01-31T09:00:00.000Z; got "
                        f"{text[:100]!r}",
                    )
        run_key: Optional[str] = None
        if idempotency_key is not None:
            run_key = idempotency_key.strip()
            if len(run_key) > IDEMPOTENCY_KEY_MAX or not _IDEMPOTENCY_KEY.fullmatch(run_key):
                return _error(
                    400,
                    f"the Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX} printable "
                    "ASCII characters",
                )
            if not isinstance(self.manager, BaseJobManager):
                return _error(
                    501,
                    f"{type(self.manager).__name__} keeps no run records, so it cannot honour "
                    "the Idempotency-Key header; send the request without it",
                )
        result = dispatch(
            self.manager,
            job_id,
            run_key=run_key,
            background=wants_async(prefer),
            scheduled_for=times[0],
            previous_fire=times[1],
        )
        outcome, status, run = result.outcome, result.status, result.run
        logger.info("bgjobs dispatch of job %r: %s", job_id, outcome)
        if outcome == "not_found" or status is None:
            return _error(404, f"no job with id {job_id!r} is scheduled on this manager")
        if outcome == "busy":
            return _error(409, f"job {job_id!r} is already running; not run again", job=status)
        if outcome == "stopped":
            return _error(409, f"job {job_id!r} is stopped in this process; not run", job=status)
        if outcome == "paused":
            return _error(
                409,
                f"job {job_id!r} is paused; not run (POST <prefix>/{job_id}/resume resumes it)",
                job=status,
            )
        if outcome == "accepted" and run is not None:
            location = quote(f"{base}/runs/", safe="/") + quote(run.run_id, safe="")
            return _json(
                202,
                run.to_dict(),
                (
                    ("Location", location),
                    ("Preference-Applied", "respond-async"),
                    *self._retry_headers(job_id),
                ),
            )
        if outcome == "duplicate" and run is not None:
            if run.job_id != job_id:
                return _error(
                    422,
                    f"this Idempotency-Key was first used for job {run.job_id!r}, not "
                    f"{job_id!r}; use a new key",
                )
            return _json(
                200,
                _with_run(status, run),
                (("Idempotent-Replayed", "true"), *self._retry_headers(job_id)),
            )
        return _json(200, _with_run(status, run), self._retry_headers(job_id))

    def _retry_headers(self, job_id: str) -> Tuple[Tuple[str, str], ...]:
        """``X-BGJobs-Retries: N`` for a job declared with ``retries=N``: the Trigger.dev
        dispatcher stops retrying a failed job after attempt N + 1."""
        manager = self.manager
        policy = manager.policy_of(job_id) if isinstance(manager, BaseJobManager) else None
        if policy is None or not policy.retries:
            return ()
        return ((RETRIES_HEADER, str(policy.retries)),)

    def _runs(self, job_id: str, limit_text: Optional[str]) -> Response:
        limit = _runs_limit(limit_text)
        if limit is None:
            return _error(
                400,
                f"the limit query parameter must be a whole number from 1 to {RUNS_LIMIT_MAX}, "
                f"got {limit_text!r}",
            )
        try:
            runs = self.manager.get_job_runs(job_id, limit)
        except JobNotFoundError:
            return _error(404, f"no job with id {job_id!r} is scheduled on this manager")
        return _json(200, {"job_id": job_id, "runs": [r.to_dict() for r in runs]})

    def _run(self, run_id: str) -> Response:
        run = self.manager.get_run(run_id) if isinstance(self.manager, BaseJobManager) else None
        if run is None:
            return _error(404, f"no run with id {run_id!r} is recorded")
        return _json(200, run.to_dict())

    def _pause(self, job_id: str, *, pause: bool) -> Response:
        try:
            if pause:
                self.manager.pause_job(job_id)
            else:
                self.manager.resume_job(job_id)
        except JobNotFoundError:
            status = None
        else:
            status = self.manager.get_job_status(job_id)
        if status is None:
            return _error(404, f"no job with id {job_id!r} is scheduled on this manager")
        logger.info("bgjobs: job %r %s over HTTP", job_id, "paused" if pause else "resumed")
        return _json(200, status.to_dict())

    def _page(self) -> Response:
        body = render_status_page(
            self.manager.get_all_job_statuses(),
            self.manager.get_job_metrics(),
            title=f"bgjobs — {type(self.manager).__name__}",
            store=self._store_health(),
        ).encode("utf-8")
        return _response(200, HTML_TYPE, body, _PAGE_HEADERS)


class WSGIApp:
    """The WSGI callable :func:`create_app` returns: routes ``prefix`` to :class:`Endpoints`."""

    def __init__(self, endpoints: Endpoints, prefix: str = DEFAULT_PREFIX) -> None:
        self.endpoints = endpoints
        self.prefix = normalize_prefix(prefix)

    def __repr__(self) -> str:
        return f"<WSGIApp prefix={self.prefix or '/'!r} {self.endpoints!r}>"

    def _relative(self, path: str) -> Optional[str]:
        if path == self.prefix:
            return ""
        if path.startswith(self.prefix + "/"):
            return path[len(self.prefix) :]
        return None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = _environ_text(environ, "PATH_INFO")
        relative = self._relative(path)
        if relative is None:
            response = _error(404, f"not found; the bgjobs endpoints are under {self.prefix}/")
        else:
            query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
            response = self.endpoints.handle(
                method,
                relative,
                authorization=environ.get("HTTP_AUTHORIZATION"),
                token=_first(query, "token"),
                idempotency_key=environ.get("HTTP_IDEMPOTENCY_KEY"),
                prefer=environ.get("HTTP_PREFER"),
                limit=_first(query, "limit"),
                scheduled_for=environ.get("HTTP_BGJOBS_SCHEDULED_FOR"),
                previous_fire=environ.get("HTTP_BGJOBS_PREVIOUS_FIRE"),
                # SCRIPT_NAME: where a parent app (e.g. DispatcherMiddleware) mounted us.
                base=_environ_text(environ, "SCRIPT_NAME").rstrip("/") + self.prefix,
            )
        start_response(response.status_line, list(response.headers))
        return [] if method == "HEAD" else [response.body]


def _environ_text(environ: WSGIEnvironment, key: str) -> str:
    # Paths arrive URL-decoded, as latin-1 text of the raw bytes (PEP 3333): undo that.
    raw = str(environ.get(key, ""))
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def _first(query: Mapping[str, List[str]], name: str) -> Optional[str]:
    values = query.get(name)
    return values[0] if values else None


def create_app(
    manager: BackgroundJobManager,
    *,
    secret: Optional[str] = None,
    prefix: str = DEFAULT_PREFIX,
    env: Optional[Mapping[str, Any]] = None,
    settings: Optional[Settings] = None,
) -> WSGIApp:
    """The WSGI app serving ``manager``'s endpoints under ``prefix`` (see the module doc).

    ``secret`` defaults to ``BGJOBS_SECRET``, else ``CRON_SECRET``, read from ``settings``
    (default: from ``env``, default ``os.environ``) now, once.
    """
    return WSGIApp(Endpoints(manager, secret=secret, settings=settings, env=env), prefix)
