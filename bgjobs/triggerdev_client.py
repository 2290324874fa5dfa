"""A small, retrying client for Trigger.dev's REST API (schedules, task triggers, runs).

Only :mod:`bgjobs.triggerdev` uses it, and ``import bgjobs`` never imports it, so
``requests`` is loaded only when Trigger.dev is in use::

    with TriggerDevClient(api_key) as client:
        schedule = client.create_schedule(
            "bgjobs-dispatch", "*/5 * * * *",
            external_id="repository-sync",
            deduplication_key="bgjobs:production:repository-sync",
        )
        run_id = client.trigger_task("bgjobs-dispatch", {"externalId": "repository-sync"})

The retry policy lives here rather than in an ``HTTPAdapter(max_retries=Retry(...))``:
urllib3's ``Retry`` leaves POST out and cannot read the ``reset`` field of a 429 body.
Every call makes at most ``max_attempts`` attempts in total:

* network errors, 408, 409 and 5xx: exponential backoff with *equal jitter* — the n-th
  wait is ``d/2 + uniform(0, d/2)`` with ``d = min(backoff_max, backoff_base * 2**(n-1))``,
  so waits never shrink to nothing (as full jitter allows) yet retries spread out;
* 429: wait until the ``reset`` time the server gives (Unix milliseconds, JSON body field
  ``reset``, else header ``x-ratelimit-reset``; else ``Retry-After`` seconds; else the
  backoff above), plus up to 100 ms of jitter, measured with the injected ``clock``
  (at most 60 s: a reset further ahead is clock skew, and the next 429 says so again);
* any other status: raised at once as :class:`~bgjobs.errors.TriggerDevError`.

Retrying writes is safe: schedules are upserted by deduplication key, and each
:meth:`TriggerDevClient.trigger_task` call sends one idempotency key with all its attempts.

What ``requests`` raises, and what this client does with it::

    requests.RequestException
    ├── ConnectionError           retried (refused, reset, dropped; also ConnectTimeout, SSLError)
    ├── Timeout                   retried (ReadTimeout: the server may have acted; see above)
    ├── ChunkedEncodingError      retried (response cut off mid-body)
    └── anything else             TriggerDevError(status=None) at once (InvalidURL, ...)

The API key is sent only in the ``Authorization`` header. It is never logged, never in
``repr()`` and never in an exception message (server text is scrubbed of it as well).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypedDict, cast
from urllib.parse import quote, urlsplit

import requests

from .config import DEFAULT_TRIGGER_DEV_MAX_ATTEMPTS
from .errors import TriggerDevError
from .types import DEFAULT_TRIGGER_DEV_API_URL

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_MAX_ATTEMPTS",
    "RunObject",
    "ScheduleEnvironment",
    "ScheduleGenerator",
    "ScheduleObject",
    "TriggerDevClient",
    "scrub",
]

logger = logging.getLogger(__name__)

DEFAULT_API_URL = DEFAULT_TRIGGER_DEV_API_URL

DEFAULT_MAX_ATTEMPTS = DEFAULT_TRIGGER_DEV_MAX_ATTEMPTS
"""Attempts per call, the first included, unless ``max_attempts`` says otherwise."""

_RETRYABLE_NETWORK_ERRORS: Tuple[type[requests.RequestException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_RETRYABLE_STATUSES = frozenset({408, 409})
_RATE_LIMIT_JITTER = 0.1
# A reset further ahead than this is clock skew or a misread field, not a real window
# (Trigger.dev's windows are about a minute); the retry will be told again if need be.
_MAX_RATE_LIMIT_WAIT = 60.0
_MAX_MESSAGE_CHARS = 200
_MAX_PAGES = 10_000


class ScheduleGenerator(TypedDict, total=False):
    """How a schedule fires: ``{"type": "CRON", "expression": ..., "description": ...}``."""

    type: str
    expression: str
    description: str


class ScheduleEnvironment(TypedDict, total=False):
    """An environment a schedule is attached to."""

    id: str
    type: str
    userName: str


class ScheduleObject(TypedDict, total=False):
    """A schedule as the API returns it (``ScheduleObject`` in the OpenAPI file).

    ``deduplicationKey`` and ``externalId`` are absent when the schedule has none;
    ``nextRun`` (ISO 8601) is absent while the schedule is inactive.
    """

    id: str
    task: str
    type: str
    active: bool
    deduplicationKey: str
    externalId: str
    generator: ScheduleGenerator
    timezone: str
    nextRun: str
    environments: List[ScheduleEnvironment]


class RunObject(TypedDict, total=False):
    """A run as ``GET /api/v3/runs/{runId}`` returns it (``RetrieveRunResponse``)."""

    id: str
    status: str
    taskIdentifier: str
    idempotencyKey: str
    version: str
    createdAt: str
    updatedAt: str
    startedAt: str
    finishedAt: str
    isTest: bool
    tags: List[str]
    payload: Any
    output: Any
    attempts: List[Dict[str, Any]]
    schedule: Dict[str, Any]


def _segment(value: str) -> str:
    """Quote one path segment: a deduplication key may hold ``:`` or ``/``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"a Trigger.dev id must be a non-empty string, got {value!r}")
    return quote(value, safe="")


class TriggerDevClient:
    """Calls Trigger.dev's REST API with timeouts, bounded retries and rate-limit waits.

    ``session`` lets callers share a connection pool; a session passed in is not closed by
    :meth:`close`. ``sleep`` and ``clock`` (Unix seconds) are injectable for tests.
    ``branch`` goes with every request as ``x-trigger-branch`` (a preview environment's
    branch, whose key is its parent's). The client keeps no state between calls apart
    from the session, so it may be shared by threads to the extent ``requests.Session``
    may.
    """

    def __init__(
        self,
        api_key: str,
        api_url: str = DEFAULT_API_URL,
        *,
        session: Optional[requests.Session] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        branch: Optional[str] = None,
    ) -> None:
        # The key goes into a header: whitespace or control characters would make requests
        # raise InvalidHeader with the whole header value — the key — in its message.
        if not isinstance(api_key, str) or not api_key or any(c.isspace() for c in api_key):
            raise ValueError("api_key must be a non-empty string without whitespace")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in api_key):
            raise ValueError("api_key must not contain control characters")
        parts = urlsplit(api_url) if isinstance(api_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"api_url must be an http(s) URL like {DEFAULT_API_URL!r}")
        for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if not (backoff_base >= 0 and math.isfinite(backoff_base)):
            raise ValueError(f"backoff_base must be >= 0 seconds, got {backoff_base!r}")
        if not (backoff_max >= 0 and math.isfinite(backoff_max)):
            raise ValueError(f"backoff_max must be >= 0 seconds, got {backoff_max!r}")

        if branch is not None and (
            not isinstance(branch, str)
            or not branch.strip()
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in branch)
        ):
            raise ValueError(f"branch must be a non-empty branch name, got {branch!r}")

        self._api_key = api_key
        self._branch = branch.strip() if branch is not None else None
        self._base_url = api_url.rstrip("/")
        self._timeout = (float(connect_timeout), float(read_timeout))
        self._max_attempts = max_attempts
        self._backoff_base = float(backoff_base)
        self._backoff_max = float(backoff_max)
        self._sleep = sleep
        self._clock = clock
        self._random = random.Random()
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._closed = False

    @property
    def api_url(self) -> str:
        """The base URL requests go to, without a trailing slash."""
        return self._base_url

    def __repr__(self) -> str:
        return f"TriggerDevClient(api_key='***', api_url={self._base_url!r})"

    def close(self) -> None:
        """Release the connection pool (a session passed in stays open). Idempotent."""
        self._closed = True
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> TriggerDevClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schedules ------------------------------------------------------------------

    def create_schedule(
        self,
        task: str,
        cron: str,
        *,
        external_id: Optional[str] = None,
        deduplication_key: Optional[str] = None,
        timezone: Optional[str] = None,
    ) -> ScheduleObject:
        """Create an imperative schedule, or update the one with this deduplication key.

        The server answers 200 for both. The API requires a deduplication key; without
        one a fresh key is made once per call, so a retried create cannot make two
        schedules. ``timezone`` ``None`` means the server's default, UTC. A plan at its
        schedule limit may answer 422 even for an existing key: :meth:`update_schedule`
        by key still works then.
        """
        body: Dict[str, Any] = {
            "task": task,
            "cron": cron,
            "deduplicationKey": deduplication_key or f"bgjobs-{uuid.uuid4().hex}",
        }
        if external_id is not None:
            body["externalId"] = external_id
        if timezone is not None:
            body["timezone"] = timezone
        return cast(ScheduleObject, self._object("POST", "/api/v1/schedules", body=body))

    def retrieve_schedule(self, schedule_id_or_key: str) -> Optional[ScheduleObject]:
        """The schedule with this id (``sched_...``) or deduplication key; ``None`` if none."""
        path = f"/api/v1/schedules/{_segment(schedule_id_or_key)}"
        data = self._request("GET", path, none_on_404=True)
        if data is None:
            return None
        return cast(ScheduleObject, self._expect_object(data, path, 200))

    def list_schedules(self, *, per_page: int = 100) -> List[ScheduleObject]:
        """Every schedule of the project, following all pages.

        The server may cap ``per_page``; paging stops at ``pagination.totalPages`` or at
        the first empty page. A schedule seen on two pages (the list shifted while it
        was read) is returned once.
        """
        if isinstance(per_page, bool) or not isinstance(per_page, int) or per_page < 1:
            raise ValueError(f"per_page must be an int >= 1, got {per_page!r}")
        path = "/api/v1/schedules"
        schedules: List[ScheduleObject] = []
        seen: set[str] = set()
        for page in range(1, _MAX_PAGES + 1):
            data = self._object("GET", path, params={"page": page, "perPage": per_page})
            items = data.get("data")
            if not isinstance(items, list):
                raise TriggerDevError("list response has no 'data' array", status=200, path=path)
            added = 0
            for item in items:
                if not isinstance(item, dict):
                    continue
                item_id = item.get("id")
                if isinstance(item_id, str):
                    if item_id in seen:
                        continue
                    seen.add(item_id)
                schedules.append(cast(ScheduleObject, item))
                added += 1
            pagination = data.get("pagination")
            total_pages = pagination.get("totalPages") if isinstance(pagination, dict) else None
            # No pagination object, an empty page, or a page of repeats (a server that
            # ignores ``page``) all mean there is nothing more to read.
            if not isinstance(total_pages, int) or page >= total_pages or not items or not added:
                break
        return schedules

    def update_schedule(
        self,
        schedule_id_or_key: str,
        task: str,
        cron: str,
        *,
        external_id: Optional[str] = None,
        timezone: Optional[str] = None,
    ) -> ScheduleObject:
        """Replace a schedule's task, cron, external id and timezone.

        PUT replaces: an omitted ``external_id`` clears it and an omitted ``timezone``
        resets it to UTC. Beware: on a missing id the live server *creates* a schedule
        (with a new ``sched_`` id and no deduplication key), so look the schedule up first.
        A schedule's deduplication key never changes (``UpdateScheduleOptions`` has no such
        field): address the schedule by its key instead.
        """
        body: Dict[str, Any] = {"task": task, "cron": cron}
        if external_id is not None:
            body["externalId"] = external_id
        if timezone is not None:
            body["timezone"] = timezone
        path = f"/api/v1/schedules/{_segment(schedule_id_or_key)}"
        return cast(ScheduleObject, self._object("PUT", path, body=body))

    def activate_schedule(self, schedule_id: str) -> ScheduleObject:
        """Turn a schedule on; a missing schedule raises ``TriggerDevError`` (404)."""
        path = f"/api/v1/schedules/{_segment(schedule_id)}/activate"
        return cast(ScheduleObject, self._object("POST", path))

    def deactivate_schedule(self, schedule_id: str) -> ScheduleObject:
        """Turn a schedule off (it is kept); a missing one raises ``TriggerDevError`` (404)."""
        path = f"/api/v1/schedules/{_segment(schedule_id)}/deactivate"
        return cast(ScheduleObject, self._object("POST", path))

    def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule: ``True`` if one was deleted, ``False`` if there was none.

        A retried DELETE whose first attempt did succeed also answers ``False``.
        """
        path = f"/api/v1/schedules/{_segment(schedule_id)}"
        return self._request("DELETE", path, none_on_404=True) is not None

    def timezones(self) -> List[str]:
        """The time zone names the server accepts (``GET /api/v1/timezones``): its
        runtime's ``Intl.supportedValuesOf("timeZone")`` plus ``UTC``."""
        path = "/api/v1/timezones"
        zones = self._object("GET", path).get("timezones")
        if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
            raise TriggerDevError(
                "timezones response has no 'timezones' list", status=200, path=path
            )
        return list(zones)

    # -- tasks and runs -------------------------------------------------------------

    def trigger_task(
        self, task: str, payload: Any, *, idempotency_key: Optional[str] = None
    ) -> str:
        """Enqueue a run of ``task`` with this JSON ``payload`` and return the run id.

        Without ``idempotency_key`` a fresh UUID is made; either way the one key goes
        with every attempt of this call (``Idempotency-Key`` header, which the live server
        reads, and ``options.idempotencyKey``, which the OpenAPI file documents), so a
        retry after a lost response cannot start a second run.
        """
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        if not isinstance(key, str) or not key:
            raise ValueError("idempotency_key must be a non-empty string")
        path = f"/api/v1/tasks/{_segment(task)}/trigger"
        body = {"payload": payload, "options": {"idempotencyKey": key}}
        data = self._object("POST", path, body=body, headers={"Idempotency-Key": key})
        run_id = data.get("id")
        if not isinstance(run_id, str) or not run_id:
            raise TriggerDevError("trigger response has no run 'id'", status=200, path=path)
        return run_id

    def retrieve_run(self, run_id: str) -> RunObject:
        """A run's status, payload, output and attempts; a missing run raises (404)."""
        path = f"/api/v3/runs/{_segment(run_id)}"
        return cast(RunObject, self._object("GET", path))

    # -- transport ------------------------------------------------------------------

    def _object(
        self,
        method: str,
        path: str,
        *,
        body: Optional[Mapping[str, Any]] = None,
        params: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Dict[str, Any]:
        data = self._request(method, path, body=body, params=params, headers=headers)
        return self._expect_object(data, path, 200)

    @staticmethod
    def _expect_object(data: Any, path: str, status: int) -> Dict[str, Any]:
        if not isinstance(data, dict):
            raise TriggerDevError(
                "expected a JSON object in the response", status=status, path=path
            )
        return data

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Optional[Mapping[str, Any]] = None,
        params: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        none_on_404: bool = False,
    ) -> Any:
        """Send one logical request, retrying per the module's policy; the parsed JSON.

        Returns ``None`` for a 404 when ``none_on_404``, ``{}`` for an empty 2xx body.
        """
        if self._closed:
            raise RuntimeError("this TriggerDevClient is closed")
        request_headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
        }
        data: Optional[bytes] = None
        if body is not None:
            # Serialised once, before any I/O: a payload that is not JSON fails here as a
            # TypeError/ValueError, and every attempt sends the very same bytes.
            data = json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")
            request_headers["Content-Type"] = "application/json"
        if self._branch is not None:
            # A preview (or development branch) environment shares its parent's key; the
            # server picks the branch's environment by this header.
            request_headers["x-trigger-branch"] = self._branch
        if headers:
            request_headers.update(headers)
        url = self._base_url + path

        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=request_headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                )
            except _RETRYABLE_NETWORK_ERRORS as exc:
                reason = f"{type(exc).__name__}: {self.scrub(str(exc))}"
                if attempt >= self._max_attempts:
                    raise TriggerDevError(
                        f"{reason} (gave up after {attempt} attempts)", status=None, path=path
                    ) from exc
                delay = self._backoff(attempt)
                self._log_retry(method, path, type(exc).__name__, delay, attempt)
                self._sleep(delay)
                continue
            except requests.RequestException as exc:
                message = f"{type(exc).__name__}: {self.scrub(str(exc))}"
                raise TriggerDevError(message, status=None, path=path) from exc

            status = response.status_code
            if 200 <= status < 300:
                return self._parse_json(response, path)
            if status == 404 and none_on_404:
                return None
            retryable = status in _RETRYABLE_STATUSES or status == 429 or status >= 500
            message = self._error_message(response)
            if not retryable:
                raise TriggerDevError(message, status=status, path=path)
            if attempt >= self._max_attempts:
                raise TriggerDevError(
                    f"{message} (gave up after {attempt} attempts)", status=status, path=path
                )
            wait = self._rate_limit_wait(response) if status == 429 else None
            delay = wait if wait is not None else self._backoff(attempt)
            self._log_retry(method, path, f"HTTP {status}", delay, attempt)
            self._sleep(delay)

    def _log_retry(self, method: str, path: str, reason: str, delay: float, attempt: int) -> None:
        logger.warning(
            "Trigger.dev %s %s failed (%s); retrying in %.2f s (attempt %d of %d)",
            method,
            path,
            reason,
            delay,
            attempt,
            self._max_attempts,
        )

    def _backoff(self, attempt: int) -> float:
        """Equal-jitter exponential backoff after the ``attempt``-th failure."""
        ceiling = min(self._backoff_max, self._backoff_base * (2.0 ** (attempt - 1)))
        return ceiling / 2.0 + self._random.uniform(0.0, ceiling / 2.0)

    def _rate_limit_wait(self, response: requests.Response) -> Optional[float]:
        """Seconds until a 429's window resets, plus jitter; ``None`` if it gives no time."""
        reset_ms = _number(_json_field(response, "reset"))
        if reset_ms is None:
            reset_ms = _number(response.headers.get("x-ratelimit-reset"))
        if reset_ms is not None:
            wait = reset_ms / 1000.0 - self._clock()
        else:
            retry_after = _number(response.headers.get("retry-after"))
            if retry_after is None:
                return None
            wait = retry_after
        wait = min(max(wait, 0.0), _MAX_RATE_LIMIT_WAIT)
        return wait + self._random.uniform(0.0, _RATE_LIMIT_JITTER)

    def _parse_json(self, response: requests.Response, path: str) -> Any:
        if not response.content.strip():
            return {}
        try:
            return json.loads(response.content)
        except ValueError:
            raise TriggerDevError(
                f"invalid JSON in the response: {self._short_text(response)}",
                status=response.status_code,
                path=path,
            ) from None

    def _error_message(self, response: requests.Response) -> str:
        """The server's explanation: JSON ``error``/``message``, else a short text."""
        for field in ("error", "message"):
            value = _json_field(response, field)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return self.scrub(value.strip())[:_MAX_MESSAGE_CHARS]
        return self._short_text(response)

    def _short_text(self, response: requests.Response) -> str:
        # Masked before it is cut: a key straddling the cut would otherwise survive in part.
        text = self.scrub(" ".join(response.text.split()))[:_MAX_MESSAGE_CHARS]
        return text or response.reason or "no explanation given"

    def scrub(self, text: str) -> str:
        """``text`` with this client's API key masked. The server has no reason to echo
        the key, but a message is cheap to check."""
        return scrub(text, self._api_key)


def scrub(text: str, *secrets: Optional[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _json_field(response: requests.Response, name: str) -> Any:
    try:
        data = json.loads(response.content)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def _number(value: Any) -> Optional[float]:
    """A finite number from a JSON value or header string; ``None`` otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
