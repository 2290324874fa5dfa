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

===========================  =========  ==================================================
``<prefix>/status``          GET, HEAD  ``{"jobs": [<job>, ...], "metrics": {...}}``
``<prefix>/<job id>``        GET, POST  run the job now (dispatch); 200 with ``<job>``
``<prefix>/`` (``<prefix>``)  GET, HEAD  an HTML status page that refreshes every 5 s
===========================  =========  ==================================================

``<job>`` is :meth:`bgjobs.types.JobStatus.to_dict` — snake_case keys, ISO 8601 UTC
timestamps — the same object in ``/status`` and in a dispatch answer. A dispatch answers
200 once the job has run, *also when it failed* (``"status": "failed"``, ``"error"`` set);
404 for an unknown id, 409 when it is already running or is stopped in this process (the
job is not run). The job runs in the request's thread, so the answer waits for it: give
the server a timeout longer than the job. ``status`` is not a usable job id here.

Every error answer has one shape, ``{"error": {"status": 409, "message": "..."}}``; a 409
also carries ``"job": <job>``. Responses are ``application/json; charset=utf-8`` (the
page ``text/html``) with ``Cache-Control: no-store``. Other methods get 405 with
``Allow``; paths outside the prefix get 404.

Authentication: ``Authorization: Bearer <secret>``, compared in constant time. The secret is
the ``secret`` argument, else ``BGJOBS_SECRET``, else ``CRON_SECRET`` (the variable Vercel
sets) from ``env`` (default ``os.environ``); an empty value counts as unset. It guards every
endpoint. With no secret configured, requests are accepted only while the app environment
(``BGJOBS_ENV``/``APP_ENV``, :func:`bgjobs.config.get_app_environment`) is
``development``; elsewhere they get 401 saying a secret must be configured. Because a
browser cannot send a Bearer header, the HTML page — and only the page — also accepts
``?token=<secret>``; the token then sits in the browser history and in access logs, so
use it on trusted networks. The secret is never put in a response or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Mapping, Optional, Tuple
from urllib.parse import parse_qs

from ._web.page import PAGE_REFRESH_SECONDS as PAGE_REFRESH_SECONDS  # re-exported
from ._web.page import render_status_page
from .config import DEFAULT_PREFIX, Settings, normalize_prefix
from .errors import JobNotFoundError
from .execution import BaseJobManager, DispatchResult
from .types import BackgroundJobManager, JobStatus

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


__all__ = [
    "DEFAULT_PREFIX",
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


def dispatch(manager: BackgroundJobManager, job_id: str) -> DispatchResult:
    """Run ``job_id`` for a remote scheduler: the outcome, and the status afterwards.

    Uses :meth:`BaseJobManager.dispatch` for every manager built on the execution core;
    for any other :class:`BackgroundJobManager` — e.g. the no-op one — falls back to
    :meth:`~BackgroundJobManager.get_job_status` plus :meth:`~BackgroundJobManager.trigger_job`
    with the same rules: a stopped job is not run.
    """
    if isinstance(manager, BaseJobManager):
        return manager.dispatch(job_id)
    status = manager.get_job_status(job_id)
    if status is None:
        return DispatchResult("not_found", None)
    if status.status == "stopped":
        return DispatchResult("stopped", status)
    try:
        ran = manager.trigger_job(job_id)
    except JobNotFoundError:  # removed between the two calls
        return DispatchResult("not_found", None)
    return DispatchResult("ran" if ran else "busy", manager.get_job_status(job_id) or status)


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
        secret = secret if secret else settings.secret
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
    ) -> Response:
        """Answer one request.

        ``path`` is the part after the prefix, already URL-decoded: ``""`` or ``"/"``
        (the page), ``"/status"`` or ``"/<job id>"``. ``authorization`` is the raw
        ``Authorization`` header; ``token`` the page's ``?token=`` value, if any. A HEAD
        request gets the GET answer; stripping the body is the server's job.
        """
        method = method.upper()
        try:
            if path in ("", "/"):
                return self._route(method, _STATUS_ALLOW, authorization, token, self._page)
            if path == "/status":
                return self._route(method, _STATUS_ALLOW, authorization, None, self._status)
            job_id = path[1:] if path.startswith("/") else ""
            if not job_id or "/" in job_id:
                return _error(404, f"no bgjobs endpoint at {path!r}")
            return self._route(
                method, _DISPATCH_ALLOW, authorization, None, lambda: self._dispatch(job_id)
            )
        except Exception:
            logger.error("bgjobs endpoint %s %r failed", method, path, exc_info=True)
            return _error(500, "internal error in the bgjobs endpoint (see the server log)")

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
        if given is None and token:
            given = token.encode("utf-8")
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
        return _json(
            200,
            {
                "jobs": [s.to_dict() for s in self.manager.get_all_job_statuses()],
                "metrics": self.manager.get_job_metrics().to_dict(),
            },
        )

    def _dispatch(self, job_id: str) -> Response:
        result = dispatch(self.manager, job_id)
        outcome, status = result.outcome, result.status
        logger.info("bgjobs dispatch of job %r: %s", job_id, outcome)
        if outcome == "not_found" or status is None:
            return _error(404, f"no job with id {job_id!r} is scheduled on this manager")
        if outcome == "busy":
            return _error(409, f"job {job_id!r} is already running; not run again", job=status)
        if outcome == "stopped":
            return _error(409, f"job {job_id!r} is stopped in this process; not run", job=status)
        return _json(200, status.to_dict())

    def _page(self) -> Response:
        body = render_status_page(
            self.manager.get_all_job_statuses(),
            self.manager.get_job_metrics(),
            title=f"bgjobs — {type(self.manager).__name__}",
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
        # PATH_INFO is already URL-decoded, as latin-1 text of the raw bytes (PEP 3333).
        raw_path = str(environ.get("PATH_INFO", ""))
        path = raw_path.encode("latin-1", "replace").decode("utf-8", "replace")
        relative = self._relative(path)
        if relative is None:
            response = _error(404, f"not found; the bgjobs endpoints are under {self.prefix}/")
        else:
            query = parse_qs(str(environ.get("QUERY_STRING", "")))
            tokens = query.get("token")
            response = self.endpoints.handle(
                method,
                relative,
                authorization=environ.get("HTTP_AUTHORIZATION"),
                token=tokens[0] if tokens else None,
            )
        start_response(response.status_line, list(response.headers))
        return [] if method == "HEAD" else [response.body]


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
