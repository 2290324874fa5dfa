"""A fake Trigger.dev REST API: a real HTTP server on 127.0.0.1 for tests.

It behaves like the live server as bgjobs' design notes describe it (API.md), including
the surprising parts, so code that works against it has a fair chance live::

    with FakeTriggerDev(schedule_limit=10) as fake:
        client = TriggerDevClient(fake.api_key, fake.url)
        fake.fail_next(503, count=2)         # the next two requests answer 503
        client.create_schedule("bgjobs-dispatch", "*/5 * * * *", deduplication_key="k")
        assert len(fake.writes()) == 3

Server behaviour:

* One project with several environments, each with its own secret key (``api_key`` is
  the first one's; :meth:`add_environment` adds more — another developer's development
  environment, staging, a preview branch). Bearer auth on every route but
  ``/api/v1/timezones``: the key picks the environment; 401 ``{"error": ...}`` otherwise.
  A preview key needs ``x-trigger-branch`` naming one of its branches (401 without), a
  development key may name a development branch (``default``: none), as live.
* Deduplication keys are unique per *project*, as live: a schedule belongs to the
  environment that last wrote it, and ``GET``/``PUT``/``DELETE``/``activate``/
  ``deactivate`` of another environment's schedule answer 404; ``POST`` with another
  environment's key takes the schedule over (moves it to the caller's environment).
  ``GET /api/v1/schedules`` lists the caller's environment's schedules only.
* ``POST /api/v1/schedules`` upserts by ``deduplicationKey`` (required) and answers 200.
  At the plan limit (``schedule_limit``: active schedules of the project's non-development
  environments, staging, production and previews alike) a POST that needs a new schedule
  answers 422 with the live message — and so does a POST for an *existing* key
  (``post_existing_at_limit_fails``, on by default, as live), while ``PUT`` by key still
  works.
* ``{id}`` in schedule paths is the ``sched_...`` id or the URL-encoded deduplication key.
* ``PUT`` on a missing id *creates* a schedule with a new ``sched_`` id and no
  deduplication key (the live server ignores ``deduplicationKey`` in a PUT body), and no
  limit check. PUT replaces: a missing ``externalId`` clears it, a missing ``timezone``
  resets it to UTC.
* Crons must have exactly 5 fields (croniter-valid); 422 otherwise. Time zones must be
  in the server's list, as live: its runtime's ``Intl.supportedValuesOf("timeZone")`` plus
  ``UTC`` — by default Node 20's (``trigger_timezones_node20.json``: ``Asia/Calcutta`` and
  ``Europe/Kiev``, no ``Asia/Kolkata``, ``Europe/Kyiv``, ``Etc/UTC`` or ``US/Eastern``),
  served by ``GET /api/v1/timezones`` (``?excludeUtc=true`` leaves ``UTC`` out); 422 with
  the live message otherwise. ``nextRun`` is computed with croniter, and omitted while inactive.
* ``GET /api/v1/schedules?page=&perPage=`` pages (default 10 a page, capped at
  ``max_per_page``) with ``{"data": [...], "pagination": {"currentPage", "totalPages",
  "count"}}``; ``totalPages`` is 0 when there are none.
* ``POST /api/v1/tasks/{task}/trigger`` answers ``{"id": "run_..."}``; the same idempotency
  key (``Idempotency-Key`` header, else body ``options.idempotencyKey``) for the same task
  gives the same run. ``GET /api/v3/runs/{id}`` returns the run.

Fault injection (queued, first match wins, each request takes at most one fault):
:meth:`fail_next`, :meth:`rate_limit_next`, :meth:`drop_next`, :meth:`hang_next`.
Every request, faulted or not, is recorded in full (:attr:`requests`).
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import socket
import threading
import time
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from croniter import croniter

__all__ = ["FakeEnvironment", "FakeTriggerDev", "RecordedRequest"]

DEFAULT_API_KEY = "tr_prod_fAk3K3y0123456789abcdef"
NODE20_TIMEZONES: Tuple[str, ...] = tuple(
    json.loads((Path(__file__).with_name("trigger_timezones_node20.json")).read_text())
)
"""``GET /api/v1/timezones`` of a server on Node 20 (ICU 78): ``UTC``, then the sorted
``Intl.supportedValuesOf("timeZone")``."""
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY_TYPES = (
    ("tr_dev_", "DEVELOPMENT"),
    ("tr_stg_", "STAGING"),
    ("tr_prod_", "PRODUCTION"),
    ("tr_preview_", "PREVIEW"),
)


def _key_type(api_key: str) -> Optional[str]:
    for prefix, env_type in _KEY_TYPES:
        if api_key.startswith(prefix):
            return env_type
    return None


@dataclass(frozen=True)
class FakeEnvironment:
    """One environment of the fake's project: its secret key, type and branch."""

    id: str
    type: str  # DEVELOPMENT, STAGING, PRODUCTION, PREVIEW
    api_key: str
    branch: Optional[str] = None
    user_name: Optional[str] = None

    def public(self) -> Dict[str, Any]:
        """As a schedule's ``environments`` entry shows it."""
        out: Dict[str, Any] = {"id": self.id, "type": self.type}
        if self.user_name is not None:
            out["userName"] = self.user_name
        return out


@dataclass
class RecordedRequest:
    """One request as the fake received it, headers and body included.

    It is recorded on arrival, so a request still hanging is already listed; ``status``
    is filled in when the answer is sent.
    """

    method: str
    raw_path: str  # as sent: percent-encoded, with the query string
    path: str  # percent-encoded, without the query string
    query: Dict[str, List[str]]
    headers: Tuple[Tuple[str, str], ...]
    body: bytes
    received_at: float  # time.time() when the request line arrived
    fault: Optional[str] = None  # "500", "429", "drop", "hang" when a fault was applied
    status: Optional[int] = None  # the status answered (None: dropped, or not yet)

    def header(self, name: str) -> Optional[str]:
        """The first header with this name, case-insensitively."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    @property
    def json(self) -> Any:
        """The body parsed as JSON; ``None`` for an empty or non-JSON body."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def segments(self) -> List[str]:
        """The path split on ``/`` with each segment URL-decoded."""
        return [unquote(part) for part in self.path.strip("/").split("/")]


@dataclass
class _Fault:
    kind: str  # "status", "drop", "hang"
    remaining: int
    method: Optional[str]
    path: Optional[str]
    status: int = 0
    body: Any = None
    headers: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    rate_limit: Optional[Dict[str, Any]] = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path is None or path == self.path or path.startswith(self.path + "/")


class _ApiError(Exception):
    def __init__(self, status: int, body: Dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeTriggerDev

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) leaves a broken pipe behind: expected, quiet.
        pass


class FakeTriggerDev:
    """An in-memory Trigger.dev API served over HTTP on ``127.0.0.1:<free port>``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. All state is
    guarded by one lock, so tests may inspect it while requests are in flight.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        schedule_limit: Optional[int] = None,
        post_existing_at_limit_fails: bool = True,
        default_per_page: int = 10,
        max_per_page: int = 100,
        tasks: Optional[Iterable[str]] = None,
        environment_type: Optional[str] = None,
        timezones: Iterable[str] = NODE20_TIMEZONES,
    ) -> None:
        self.api_key = api_key
        #: What GET /api/v1/timezones answers and what schedules may use (``UTC`` first).
        self.timezones: List[str] = list(timezones)
        self.schedule_limit = schedule_limit
        self.post_existing_at_limit_fails = post_existing_at_limit_fails
        self.default_per_page = default_per_page
        self.max_per_page = max_per_page
        # None: every task exists; else unknown tasks get 422 (schedules) / 404 (trigger).
        self.tasks: Optional[Set[str]] = set(tasks) if tasks is not None else None
        # Guards _schedules, _runs, _idempotency, _faults, _requests, _environments.
        self._lock = threading.Lock()
        self._environments: Dict[Tuple[str, Optional[str]], FakeEnvironment] = {}
        first = self.add_environment(
            api_key, environment_type or _key_type(api_key) or "PRODUCTION", env_id="env_fake0"
        )
        self.environment = first.public()  # the first key's, as schedules show it
        self._schedules: Dict[str, Dict[str, Any]] = {}  # by sched id, insertion order
        self._runs: Dict[str, Dict[str, Any]] = {}
        self._idempotency: Dict[Tuple[str, str, str], str] = {}
        self._faults: List[_Fault] = []
        self._requests: List[RecordedRequest] = []
        self._stopping = threading.Event()
        self._hangs_cut = threading.Event()  # set: hangs end at once, unanswered
        self._connections: Set[socket.socket] = set()
        self._connections_lock = threading.Lock()  # guards _connections
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> FakeTriggerDev:
        """Bind a free port and serve in a daemon thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},  # stop() waits up to this long
            name="fake-triggerdev",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are cut, open connections closed."""
        self._stopping.set()
        self._hangs_cut.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeTriggerDev:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give the client, e.g. ``http://127.0.0.1:54321``."""
        assert self._server is not None, "call start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- fault injection ------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        method: Optional[str] = None,
        path: Optional[str] = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` instead.

        ``body`` defaults to ``{"error": "<reason>"}``; pass ``bytes`` for a non-JSON body
        (an HTML error page from a proxy, say). ``method``/``path`` (a percent-encoded
        path or path prefix) restrict which requests match. For 429 prefer
        :meth:`rate_limit_next`.
        """
        self._add(
            _Fault(
                "status",
                count,
                method,
                path,
                status=status,
                body=body,
                headers=dict(headers or {}),
            )
        )

    def rate_limit_next(
        self,
        count: int = 1,
        *,
        reset_in: Optional[float] = None,
        reset_at_ms: Optional[int] = None,
        in_body: bool = True,
        in_header: bool = True,
        method: Optional[str] = None,
        path: Optional[str] = None,
    ) -> None:
        """Answer the next ``count`` matching requests with 429, as Trigger.dev does.

        The reset time (Unix milliseconds) is ``reset_at_ms``, or ``reset_in`` seconds
        after the 429 is sent (default 1 s); it goes in the body field ``reset`` and/or
        the header ``x-ratelimit-reset``.
        """
        if reset_in is None and reset_at_ms is None:
            reset_in = 1.0
        spec = {
            "reset_in": reset_in,
            "reset_at_ms": reset_at_ms,
            "in_body": in_body,
            "in_header": in_header,
        }
        self._add(_Fault("status", count, method, path, status=429, rate_limit=spec))

    def drop_next(
        self, count: int = 1, *, method: Optional[str] = None, path: Optional[str] = None
    ) -> None:
        """Close the connection without answering the next ``count`` matching requests.

        The request is read (and recorded) first but not processed.
        """
        self._add(_Fault("drop", count, method, path))

    def hang_next(
        self,
        seconds: float,
        count: int = 1,
        *,
        method: Optional[str] = None,
        path: Optional[str] = None,
    ) -> None:
        """Wait ``seconds`` before processing and answering the next matching requests.

        Like a slow server, the request is processed after the wait even if the client
        gave up meanwhile. :meth:`stop` cuts the wait short (without processing).
        """
        self._add(_Fault("hang", count, method, path, seconds=seconds))

    def cut_hangs(self) -> None:
        """End every hang, now and from now on, by closing its connection unanswered (as a
        server that crashes mid-request does): the client sees a dropped connection."""
        self._hangs_cut.set()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> int:
        """How many injected faults have not been used yet."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def _add(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> Optional[_Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- inspection and seeding -----------------------------------------------------

    @property
    def requests(self) -> List[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def writes(self) -> List[RecordedRequest]:
        """The POST/PUT/PATCH/DELETE requests received so far."""
        return [r for r in self.requests if r.method in _WRITE_METHODS]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def schedules(self) -> List[Dict[str, Any]]:
        """Every schedule as the API would show it, in creation order."""
        with self._lock:
            return [self._public(s) for s in self._schedules.values()]

    def schedule(self, id_or_key: str) -> Optional[Dict[str, Any]]:
        """One schedule by id or deduplication key, as the API would show it."""
        with self._lock:
            found = self._find(id_or_key)
            return self._public(found) if found is not None else None

    @property
    def runs(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._runs.values()]

    def add_schedule(
        self,
        task: str,
        cron: str,
        *,
        deduplication_key: Optional[str] = None,
        external_id: Optional[str] = None,
        timezone: Optional[str] = None,
        active: bool = True,
        environment: Optional[FakeEnvironment] = None,
    ) -> Dict[str, Any]:
        """Put a schedule straight into the store (no limit check, no request recorded);
        it belongs to ``environment``, by default the first key's."""
        owner = environment or self.environment_of(self.api_key)
        with self._lock:
            record = self._new_schedule(task, cron, timezone, external_id, deduplication_key, owner)
            record["active"] = active
            return self._public(record)

    def add_environment(
        self,
        api_key: str,
        env_type: Optional[str] = None,
        *,
        branch: Optional[str] = None,
        user_name: Optional[str] = None,
        env_id: Optional[str] = None,
    ) -> FakeEnvironment:
        """Add an environment to the project; ``env_type`` defaults to the key's prefix.

        With ``branch``: a branch of the environment with that key (a preview branch, or a
        developer's development branch), which shares its parent's key and is chosen by
        ``x-trigger-branch``; the parent is added first if need be.
        """
        env_type = env_type or _key_type(api_key) or "PRODUCTION"
        with self._lock:
            if branch is not None and (api_key, None) not in self._environments:
                self._environments[(api_key, None)] = FakeEnvironment(
                    "env_" + secrets.token_hex(8), env_type, api_key, None, user_name
                )
            environment = FakeEnvironment(
                env_id or "env_" + secrets.token_hex(8), env_type, api_key, branch, user_name
            )
            self._environments[(api_key, branch)] = environment
            return environment

    def environment_of(self, api_key: str, branch: Optional[str] = None) -> FakeEnvironment:
        """The environment a key (and branch) stands for."""
        with self._lock:
            return self._environments[(api_key, branch)]

    # -- request handling (called from handler threads) -----------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _dispatch(
        self, method: str, segments: List[str], query: Dict[str, List[str]], handler: _Handler
    ) -> Tuple[int, Dict[str, Any]]:
        """Route one request; returns (status, JSON body) or raises _ApiError."""
        if segments == ["api", "v1", "timezones"] and method == "GET":
            exclude_utc = query.get("excludeUtc", ["false"])[0] == "true"
            zones = [z for z in self.timezones if not (exclude_utc and z == "UTC")]
            return 200, {"timezones": zones}
        env = self._authenticate(
            handler.headers.get("Authorization"), handler.headers.get("x-trigger-branch")
        )

        if segments[:3] == ["api", "v1", "schedules"]:
            rest = segments[3:]
            if not rest:
                if method == "POST":
                    return 200, self._create(handler.json_body(), env)
                if method == "GET":
                    return 200, self._list(query, env)
            elif len(rest) == 1:
                if method == "GET":
                    return 200, self._get(rest[0], env)
                if method == "PUT":
                    return 200, self._update(rest[0], handler.json_body(), env)
                if method == "DELETE":
                    return 200, self._delete(rest[0], env)
            elif len(rest) == 2 and rest[1] in ("activate", "deactivate") and method == "POST":
                return 200, self._set_active(rest[0], rest[1] == "activate", env)
            else:
                raise _ApiError(404, {"error": "Not found"})
            raise _ApiError(405, {"error": "Method not allowed"})
        is_trigger = len(segments) == 5 and segments[4] == "trigger"
        if is_trigger and segments[:3] == ["api", "v1", "tasks"] and method == "POST":
            key = handler.headers.get("Idempotency-Key")
            return 200, self._trigger(segments[3], handler.json_body(), key, env)
        if len(segments) == 4 and segments[:3] == ["api", "v3", "runs"] and method == "GET":
            return 200, self._get_run(segments[3], env)
        raise _ApiError(404, {"error": "Not found"})

    def _authenticate(
        self, authorization: Optional[str], branch_header: Optional[str]
    ) -> FakeEnvironment:
        """The environment the request's key (and ``x-trigger-branch``) stands for."""
        scheme, _, api_key = (authorization or "").partition(" ")
        branch = (branch_header or "").strip() or None
        if branch is not None and branch.startswith("refs/heads/"):
            branch = branch[len("refs/heads/") :]
        with self._lock:
            root = self._environments.get((api_key, None)) if scheme == "Bearer" else None
            if root is None:
                raise _ApiError(401, {"error": "Invalid or Missing API Key"})
            if root.type == "PREVIEW" or (
                root.type == "DEVELOPMENT" and branch is not None and branch != "default"
            ):
                # As live: a preview key without a branch, or with an unknown one, is no key.
                child = self._environments.get((api_key, branch)) if branch else None
                if child is None:
                    raise _ApiError(401, {"error": "Invalid or Missing API Key"})
                return child
            return root

    # Everything below runs with self._lock held (taken in the methods that call _find).

    def _find(self, id_or_key: str) -> Optional[Dict[str, Any]]:
        record = self._schedules.get(id_or_key)
        return record if record is not None else self._find_by_key(id_or_key)

    def _find_or_404(self, id_or_key: str, env: FakeEnvironment) -> Dict[str, Any]:
        record = self._find(id_or_key)
        if record is None or not self._visible(record, env):
            raise _ApiError(404, {"error": "Schedule not found"})
        return record

    @staticmethod
    def _visible(record: Mapping[str, Any], env: FakeEnvironment) -> bool:
        # As live (getScheduleEnvVisibility): another environment's schedule is "hidden".
        return not record["instances"] or env.id in record["instances"]

    def _used_schedules(self) -> int:
        """Active schedules of non-development environments: what the plan's limit counts."""
        types = {e.id: e.type for e in self._environments.values()}
        return sum(
            1
            for record in self._schedules.values()
            if record["active"]
            and any(types.get(i, "PRODUCTION") != "DEVELOPMENT" for i in record["instances"])
        )

    def _check_schedule_fields(self, body: Any, *, create: bool) -> None:
        if not isinstance(body, dict):
            raise _ApiError(400, {"error": "Invalid request body", "issues": ["expected object"]})
        required = ("task", "cron", "deduplicationKey") if create else ("task", "cron")
        issues = [f"{name}: Required" for name in required if not isinstance(body.get(name), str)]
        for name in ("externalId", "timezone"):
            if name in body and not isinstance(body[name], str):
                issues.append(f"{name}: Expected string")
        if issues:
            raise _ApiError(400, {"error": "Invalid request body", "issues": issues})

    def _check_cron_and_task(self, cron: str, task: str) -> None:
        fields = cron.split()
        if len(fields) != 5 or not croniter.is_valid(cron):
            raise _ApiError(422, {"error": f"Invalid cron expression: {cron}"})
        if self.tasks is not None and task not in self.tasks:
            raise _ApiError(422, {"error": f"Task with identifier {task} not found in project."})

    def _check_timezone(self, name: Optional[str]) -> None:
        # As live (CheckScheduleService): membership of the runtime's list, nothing else.
        if name and name not in self.timezones:
            raise _ApiError(
                422,
                {
                    "error": f"Invalid IANA timezone: '{name}'. View the list of valid "
                    "timezones at https://cloud.trigger.dev/timezones"
                },
            )

    def _new_schedule(
        self,
        task: str,
        cron: str,
        tz: Optional[str],
        external_id: Optional[str],
        dedup_key: Optional[str],
        env: FakeEnvironment,
    ) -> Dict[str, Any]:
        schedule_id = "sched_" + secrets.token_hex(10)
        record = {
            "id": schedule_id,
            "task": task,
            "cron": cron,
            "timezone": tz if tz and tz != "UTC" else None,
            "externalId": external_id or None,
            "deduplicationKey": dedup_key or secrets.token_urlsafe(18),
            "userProvidedKey": bool(dedup_key),
            "active": True,
            "instances": [env.id],
        }
        self._schedules[schedule_id] = record
        return record

    @staticmethod
    def _apply(record: Dict[str, Any], body: Mapping[str, Any]) -> None:
        # Upserts replace: missing optional fields go back to their defaults, as live.
        record["task"] = body["task"]
        record["cron"] = body["cron"]
        tz = body.get("timezone")
        record["timezone"] = tz if tz and tz != "UTC" else None
        record["externalId"] = body.get("externalId") or None

    def _create(self, body: Any, env: FakeEnvironment) -> Dict[str, Any]:
        self._check_schedule_fields(body, create=True)
        self._check_cron_and_task(body["cron"], body["task"])
        with self._lock:
            existing = self._find_by_key(body["deduplicationKey"])
            limit = self.schedule_limit
            used = self._used_schedules()
            at_limit = limit is not None and used >= limit
            if at_limit and (existing is None or self.post_existing_at_limit_fails):
                raise _ApiError(
                    422,
                    {
                        "error": f"You have created {used}/{limit} schedules so you'll "
                        "need to increase your limits or delete some schedules."
                    },
                )
            self._check_timezone(body.get("timezone"))
            if existing is not None:
                self._apply(existing, body)
                # Keys are per project: the caller's environment takes the schedule over.
                existing["instances"] = [env.id]
                return self._public(existing)
            record = self._new_schedule(
                body["task"],
                body["cron"],
                body.get("timezone"),
                body.get("externalId"),
                body["deduplicationKey"],
                env,
            )
            return self._public(record)

    def _find_by_key(self, key: str) -> Optional[Dict[str, Any]]:
        for record in self._schedules.values():
            if record["userProvidedKey"] and record["deduplicationKey"] == key:
                return record
        return None

    def _update(self, id_or_key: str, body: Any, env: FakeEnvironment) -> Dict[str, Any]:
        self._check_schedule_fields(body, create=False)
        self._check_cron_and_task(body["cron"], body["task"])
        self._check_timezone(body.get("timezone"))
        with self._lock:
            record = self._find(id_or_key)
            if record is None:
                # As live: a new schedule with a fresh id and no user deduplication key.
                record = self._new_schedule(
                    body["task"],
                    body["cron"],
                    body.get("timezone"),
                    body.get("externalId"),
                    None,
                    env,
                )
            elif not self._visible(record, env):
                raise _ApiError(404, {"error": "Schedule not found"})
            else:
                self._apply(record, body)
            return self._public(record)

    def _get(self, id_or_key: str, env: FakeEnvironment) -> Dict[str, Any]:
        with self._lock:
            return self._public(self._find_or_404(id_or_key, env))

    def _delete(self, id_or_key: str, env: FakeEnvironment) -> Dict[str, Any]:
        with self._lock:
            record = self._find_or_404(id_or_key, env)
            del self._schedules[record["id"]]
            return {"id": record["id"]}

    def _set_active(self, id_or_key: str, active: bool, env: FakeEnvironment) -> Dict[str, Any]:
        with self._lock:
            record = self._find_or_404(id_or_key, env)
            record["active"] = active
            return self._public(record)

    def _list(self, query: Dict[str, List[str]], env: FakeEnvironment) -> Dict[str, Any]:
        try:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get("perPage", [str(self.default_per_page)])[0])
        except ValueError:
            raise _ApiError(400, {"error": "Invalid query parameters"}) from None
        if page < 1 or per_page < 1:
            raise _ApiError(400, {"error": "Invalid query parameters"})
        per_page = min(per_page, self.max_per_page)
        with self._lock:
            records = [r for r in self._schedules.values() if self._visible(r, env)]
            start = (page - 1) * per_page
            data = [self._public(r) for r in records[start : start + per_page]]
        return {
            "data": data,
            "pagination": {
                "currentPage": page,
                "totalPages": math.ceil(len(records) / per_page),
                "count": len(records),
            },
        }

    def _public(self, record: Mapping[str, Any]) -> Dict[str, Any]:
        tz = record["timezone"] or "UTC"
        out: Dict[str, Any] = {
            "id": record["id"],
            "type": "IMPERATIVE",
            "task": record["task"],
            "active": record["active"],
            "generator": {
                "type": "CRON",
                "expression": record["cron"],
                "description": f"Cron: {record['cron']}",
            },
            "timezone": tz,
            "environments": [
                e.public() for e in self._environments.values() if e.id in record["instances"]
            ],
        }
        if record["externalId"]:
            out["externalId"] = record["externalId"]
        if record["userProvidedKey"]:
            out["deduplicationKey"] = record["deduplicationKey"]
        if record["active"]:
            now = datetime.now(zoneinfo.ZoneInfo(tz))
            nxt = croniter(record["cron"], now).get_next(datetime)
            out["nextRun"] = _iso(nxt)
        return out

    def _trigger(
        self, task: str, body: Any, header_key: Optional[str], env: FakeEnvironment
    ) -> Dict[str, Any]:
        if not isinstance(body, dict):
            raise _ApiError(400, {"error": "Invalid request body"})
        if self.tasks is not None and task not in self.tasks:
            raise _ApiError(404, {"error": f"Task not found: {task}"})
        options = body.get("options")
        key = header_key
        if key is None and isinstance(options, dict):
            option_key = options.get("idempotencyKey")
            key = option_key if isinstance(option_key, str) else None
        with self._lock:
            if key is not None and (env.id, task, key) in self._idempotency:
                return {"id": self._idempotency[(env.id, task, key)]}
            run_id = "run_" + secrets.token_hex(10)
            now = _iso(datetime.now(timezone.utc))
            run: Dict[str, Any] = {
                "id": run_id,
                "status": "QUEUED",
                "taskIdentifier": task,
                "createdAt": now,
                "updatedAt": now,
                "isTest": False,
                "tags": [],
                "depth": 0,
                "triggerFunction": "trigger",
                "payload": body.get("payload"),
                "attempts": [],
                "environmentId": env.id,
            }
            if key is not None:
                run["idempotencyKey"] = key
                self._idempotency[(env.id, task, key)] = run_id
            self._runs[run_id] = run
            return {"id": run_id}

    def _get_run(self, run_id: str, env: FakeEnvironment) -> Dict[str, Any]:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run["environmentId"] != env.id:
                raise _ApiError(404, {"error": "Run not found"})
            return {k: v for k, v in run.items() if k != "environmentId"}


def _iso(value: datetime) -> str:
    utc = value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the live API
    server: _Server
    timeout = 30  # an idle kept-alive connection must not pin a thread forever

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.fake._connections_lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.fake._connections_lock:
                self.server.fake._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read fake.requests instead of stderr noise

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def json_body(self) -> Any:
        if not self._body:
            raise _ApiError(400, {"error": "Invalid request body"})
        try:
            return json.loads(self._body)
        except ValueError:
            raise _ApiError(400, {"error": "Invalid request body: not JSON"}) from None

    def _handle(self) -> None:
        fake = self.server.fake
        received_at = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        record = RecordedRequest(
            method=self.command,
            raw_path=self.path,
            path=split.path,
            query=parse_qs(split.query),
            headers=tuple(self.headers.items()),
            body=self._body,
            received_at=received_at,
        )
        fake._record(record)
        fault = fake._take_fault(self.command, split.path)

        if fault is not None and fault.kind == "drop":
            record.fault = "drop"
            self.close_connection = True
            return  # nothing written: the client sees the connection closed
        if fault is not None and fault.kind == "status":
            status, body, headers = self._fault_response(fault)
            record.fault, record.status = str(status), status
            self._send(status, body, headers)
            return
        if fault is not None and fault.kind == "hang":
            record.fault = "hang"
            if fake._hangs_cut.wait(fault.seconds):
                self.close_connection = True
                return

        segments = [unquote(part) for part in split.path.strip("/").split("/")]
        try:
            status, payload = fake._dispatch(self.command, segments, record.query, self)
        except _ApiError as exc:
            status, payload = exc.status, exc.body
        except Exception as exc:  # a bug in the fake must show up as a 500, not a hang
            status, payload = 500, {"error": f"fake server bug: {exc!r}"}
        record.status = status
        self._send(status, json.dumps(payload).encode(), {})

    def _fault_response(self, fault: _Fault) -> Tuple[int, bytes, Dict[str, str]]:
        headers = dict(fault.headers)
        if fault.rate_limit is not None:
            spec = fault.rate_limit
            reset_ms = spec["reset_at_ms"]
            if reset_ms is None:
                reset_ms = int((time.time() + spec["reset_in"]) * 1000)
            body_obj: Dict[str, Any] = {"error": "Rate limit exceeded"}
            if spec["in_body"]:
                body_obj.update({"limit": 1500, "remaining": 0, "reset": reset_ms})
            if spec["in_header"]:
                headers.update(
                    {
                        "x-ratelimit-limit": "1500",
                        "x-ratelimit-remaining": "0",
                        "x-ratelimit-reset": str(reset_ms),
                    }
                )
            return 429, json.dumps(body_obj).encode(), headers
        if isinstance(fault.body, bytes):
            headers.setdefault("Content-Type", "text/html")
            return fault.status, fault.body, headers
        body = fault.body
        if body is None:
            body = {"error": self.responses.get(fault.status, ("Error",))[0]}
        return fault.status, json.dumps(body).encode(), headers

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            self.send_response(status)
            if not any(k.lower() == "content-type" for k in headers):
                self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client hung up first (timed out)
