"""A local stand-in for the Acronis Workload Management API v5, with fault injection.

Speaks the documented shapes: OAuth2 client-credentials token endpoints, Bearer-token checks,
the workloads list (filters, include flags, cursor paging), get, create, PATCH (204, no body) and
delete, and the API's error envelope — for every error, including the ones aiohttp would answer
in plain text (unknown path, method not allowed, body over 1 MiB). Faults are decided per request
from ``seed`` and the workload id and its request count, so a row meets the same faults whatever
the send order.

Counters for tests live outside the API, under ``/__mock__/``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import secrets
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from bulkpatch.mock.announce import quota_headers
from bulkpatch.mock.store import WorkloadStore, decode_cursor, sample_workloads

API = "/api/workload_management/v5"
_FIELD_TYPES: dict[str, type] = {
    "name": str,
    "attributes": dict,
    "client_id": str,
    "allowed_actions": list,
    "enabled": bool,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: the envelope's ``code`` for the statuses aiohttp raises on its own
_CODES = {
    400: "BadRequest",
    401: "UnauthorizedRequest",
    403: "AccessDenied",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "DataConflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_log = logging.getLogger(__name__)


@dataclass
class MockConfig:
    """How the mock behaves; every fault is off by default."""

    client_id: str = "bulkpatch-demo"
    client_secret: str = "demo-secret"
    #: bearer tokens accepted without the token endpoint (like BULKPATCH_TOKEN)
    static_tokens: tuple[str, ...] = ()
    #: seconds an issued token stays valid
    token_lifetime: float = 7200.0
    #: False: accept API calls without any token
    require_auth: bool = True
    seed: int = 7
    #: added to every API answer, milliseconds (and a random extra up to ``latency_jitter_ms``)
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    #: share of API requests answered 503
    error_rate: float = 0.0
    #: share of API requests whose connection is dropped without an answer
    drop_rate: float = 0.0
    #: API requests per second allowed; above it, 429 with Retry-After
    rate_limit: float | None = None
    #: the Retry-After (seconds) sent with a 429
    retry_after: int = 1
    #: announce ``rate_limit`` in every API answer, in one of ``ANNOUNCE_FORMS``; the limit then
    #: counts fixed one-second windows (on the Unix clock's seconds), as such APIs do
    announce_rate_limit: str | None = None
    #: workloads to seed when no ``seed_file`` is given
    workloads: int = 200
    seed_file: str | None = None
    persist: str | None = None


@dataclass
class Counters:
    """What the mock saw; served at ``GET /__mock__/stats``."""

    by_status: Counter[int] = field(default_factory=Counter)
    #: successful PATCHes (204) per workload id
    patches: Counter[str] = field(default_factory=Counter)
    #: PATCHes answered 404 because no workload has that id
    patches_not_found: Counter[str] = field(default_factory=Counter)
    tokens_issued: int = 0
    token_requests: int = 0
    dropped: int = 0
    requests: int = 0
    #: monotonic arrival times of the latest API requests (for rate checks)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "patches": dict(self.patches),
            "patched_ids": len(self.patches),
            "duplicate_patches": sum(n - 1 for n in self.patches.values() if n > 1),
            "patches_not_found": dict(self.patches_not_found),
            "tokens_issued": self.tokens_issued,
            "token_requests": self.token_requests,
            "dropped": self.dropped,
        }


def error(status: int, code: str, message: str, **details: Any) -> web.Response:
    """An error in the API's envelope."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "domain": "WorkloadManagement",
            "context": {},
            "details": {"info": details.get("info", message)},
        }
    }
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class MockApi:
    """The handlers and their state; ``app`` is the aiohttp application to serve."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config or MockConfig()
        cfg = self.config
        if cfg.seed_file:
            self.store = WorkloadStore.from_jsonl(cfg.seed_file, persist=cfg.persist)
        else:
            self.store = WorkloadStore(sample_workloads(cfg.workloads, seed=cfg.seed), persist=cfg.persist)
        self.counters = Counters()
        self._tokens: dict[str, float] = {}
        self._seen: Counter[str] = Counter()
        self._window: deque[float] = deque()
        self._fixed_second = 0
        self._fixed_used = 0
        # The counting middleware is outside the envelope one, so it counts the enveloped status.
        self.app = web.Application(middlewares=[self._middleware, self._envelope])
        r = self.app.router
        for path in ("/api/2/idp/token", "/bc/idp/token"):
            r.add_post(path, self.token)
        r.add_get(f"{API}/workloads", self.list_workloads)
        r.add_post(f"{API}/workloads", self.create_workloads)
        r.add_delete(f"{API}/workloads", self.delete_workloads)
        r.add_get(f"{API}/workloads/{{workload_id}}", self.get_workload)
        r.add_patch(f"{API}/workloads/{{workload_id}}", self.patch_workload)
        r.add_get("/__mock__/stats", self.stats)
        r.add_get("/__mock__/arrivals", self.arrivals)
        r.add_post("/__mock__/reset", self.reset)
        self.app.on_shutdown.append(self._save)

    async def _save(self, app: web.Application) -> None:
        self.store.save()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API):
            return await handler(request)
        self.counters.requests += 1
        self.counters.arrivals.append(time.monotonic())
        response = await self._api_call(request, handler)
        self.counters.by_status[response.status] += 1
        return response

    @web.middleware
    async def _envelope(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer aiohttp's own errors (404, 405, 413, a crash) in the API's envelope, not in text."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error(exc.status, _CODES.get(exc.status, _code(exc.reason)), _message(request, exc))
            for name in ("Allow", "Retry-After"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response
        except Exception:
            _log.exception("mock: %s %s failed", request.method, request.path)
            return error(500, "InternalServerError", "the mock failed on this request; see its log")

    async def _api_call(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        cfg = self.config
        if cfg.require_auth and not self._authorized(request):
            return error(401, "UnauthorizedRequest", "missing, invalid or expired access token")
        if cfg.rate_limit and cfg.announce_rate_limit:
            return await self._announced_call(request, handler)
        if cfg.rate_limit and not self._admit():
            response = error(429, "TooManyRequests", "rate limit exceeded")
            response.headers["Retry-After"] = str(cfg.retry_after)
            return response
        return await self._faulty_call(request, handler)

    async def _announced_call(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A fixed window per Unix second, announced in every answer (429s too)."""
        now = time.time()
        second = int(now)
        if second != self._fixed_second:
            self._fixed_second, self._fixed_used = second, 0
        limit = int(self.config.rate_limit or 0)
        admitted = self._fixed_used < limit
        self._fixed_used += admitted
        headers = quota_headers(self.config.announce_rate_limit or "", limit, limit - self._fixed_used, now)
        if not admitted:
            response: web.StreamResponse = error(429, "TooManyRequests", "rate limit exceeded")
            response.headers["Retry-After"] = str(self.config.retry_after)
        else:
            response = await self._faulty_call(request, handler)
        response.headers.update(headers)
        return response

    async def _faulty_call(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        cfg = self.config
        draw = self._draw(request)
        if cfg.latency_ms or cfg.latency_jitter_ms:
            await asyncio.sleep((cfg.latency_ms + cfg.latency_jitter_ms * draw[2]) / 1000.0)
        if draw[0] < cfg.drop_rate:
            self.counters.dropped += 1
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=499)  # never reaches the client
        if draw[1] < cfg.error_rate:
            return error(503, "ServiceUnavailable", "the service is temporarily unavailable")
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header[7:]
        if token in self.config.static_tokens:
            return True
        expires = self._tokens.get(token)
        return expires is not None and time.time() < expires

    def _admit(self) -> bool:
        """A sliding one-second window of admitted requests."""
        now = time.monotonic()
        window = self._window
        while window and now - window[0] >= 1.0:
            window.popleft()
        limit = self.config.rate_limit or 0
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def _draw(self, request: web.Request) -> tuple[float, float, float]:
        """Three numbers in [0, 1) fixed by seed, the request's target and how often it was seen."""
        target = f"{request.method} {request.path}"
        self._seen[target] += 1
        digest = hashlib.blake2b(
            f"{self.config.seed}|{target}|{self._seen[target]}".encode(), digest_size=12
        ).digest()
        return tuple(int.from_bytes(digest[i : i + 4], "big") / 2**32 for i in (0, 4, 8))  # type: ignore[return-value]

    async def token(self, request: web.Request) -> web.Response:
        self.counters.token_requests += 1
        credentials = _basic_credentials(request.headers.get("Authorization", ""))
        if credentials is None:
            return error(401, "UnauthorizedRequest", "client authentication required")
        login, password = credentials
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return error(400, "BadRequest", "grant_type must be client_credentials")
        cfg = self.config
        if not (
            secrets.compare_digest(login.encode(), cfg.client_id.encode())
            and secrets.compare_digest(password.encode(), cfg.client_secret.encode())
        ):
            return error(401, "UnauthorizedRequest", "invalid client credentials")
        token = secrets.token_urlsafe(32)
        expires_on = time.time() + cfg.token_lifetime
        self._tokens[token] = expires_on
        self.counters.tokens_issued += 1
        body = {
            "access_token": token,
            "expires_on": int(expires_on) if cfg.token_lifetime >= 10 else expires_on,
            "id_token": secrets.token_urlsafe(16),
            "token_type": "bearer",
        }
        return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())

    async def list_workloads(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "100"))
            if not 1 <= limit <= 1000:
                raise ValueError
        except ValueError:
            return error(400, "BadRequest", "limit must be an integer from 1 to 1000")
        try:
            after = decode_cursor(q["after"]) if "after" in q else None
            before = decode_cursor(q["before"]) if "before" in q else None
        except ValueError:
            return error(400, "BadRequest", "invalid paging cursor")
        ids = None
        if "workload_id" in q:
            ids = set(_id_list(q["workload_id"]))
            if len(ids) > 100:
                return error(400, "BadRequest", "at most 100 workload ids per filter")
        try:
            match = _filters(q)
        except ValueError as exc:
            return error(400, "BadRequest", str(exc))
        items, cursors = self.store.page(ids=ids, limit=limit, after=after, before=before, match=match)
        include_all = _flag(q.get("include_all_attributes"))
        wanted_attrs = {a for v in q.getall("include_attributes", []) for a in v.split(",") if a}
        include_actions = _flag(q.get("include_allowed_actions"))
        shaped = []
        for item in items:
            view = {k: v for k, v in item.items() if k not in ("attributes", "allowed_actions")}
            if include_all:
                view["attributes"] = dict(item["attributes"])
            elif wanted_attrs:
                view["attributes"] = {k: v for k, v in item["attributes"].items() if k in wanted_attrs}
            if include_actions:
                view["allowed_actions"] = list(item["allowed_actions"])
            shaped.append(view)
        body = {"items": shaped, "paging": {"cursors": cursors}}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def get_workload(self, request: web.Request) -> web.Response:
        item = self.store.get(request.match_info["workload_id"])
        if item is None:
            return error(404, "NotFound", "workload not found")
        return web.Response(body=orjson.dumps(item), content_type="application/json")

    async def create_workloads(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        items = body.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return error(400, "ValidationError", "items must be an array of workload objects")
        for item in items:
            problem = _check_fields(item, allow={"id", "type", "tenant_id", "external_id"})
            if problem:
                return error(400, "ValidationError", problem)
        for item in items:
            self.store.create(item)
        return web.Response(status=204)

    async def patch_workload(self, request: web.Request) -> web.Response:
        workload_id = request.match_info["workload_id"]
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        problem = _check_fields(body)
        if problem:
            return error(400, "ValidationError", problem)
        if not self.store.update(workload_id, body):
            self.counters.patches_not_found[workload_id] += 1
            return error(404, "NotFound", f"workload {workload_id} not found")
        self.counters.patches[workload_id] += 1
        return web.Response(status=204)

    async def delete_workloads(self, request: web.Request) -> web.Response:
        raw = request.query.get("workload_id")
        if not raw:
            return error(400, "BadRequest", "workload_id is required")
        ids = _id_list(raw)
        if len(ids) > 100:
            return error(400, "BadRequest", "at most 100 workload ids per call")
        self.store.delete(ids)
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.counters.as_dict()), content_type="application/json")

    async def arrivals(self, request: web.Request) -> web.Response:
        """Monotonic arrival times of the latest API requests, oldest first."""
        return web.Response(body=orjson.dumps(list(self.counters.arrivals)), content_type="application/json")

    async def reset(self, request: web.Request) -> web.Response:
        self.counters = Counters()
        self._seen.clear()
        return web.Response(status=204)


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_type != "application/json":
        return error(415, "UnsupportedMediaType", "Content-Type must be application/json")
    try:
        raw = await request.read()
    except ConnectionResetError:
        return web.Response(status=499)  # the client went away mid-body: nothing to answer
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error(400, "BadRequest", "the body is not valid JSON")
    if not isinstance(body, dict):
        return error(400, "BadRequest", "the body must be a JSON object")
    return body


def _code(reason: str) -> str:
    """``"Request Timeout"`` → ``"RequestTimeout"``: the envelope's style for a status without a name."""
    return "".join(word[:1].upper() + word[1:] for word in reason.split()) or "Error"


def _message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such resource: {request.path}"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
    if exc.status == 413:
        return f"the request body is larger than the limit of {request.client_max_size} bytes"
    return exc.text or exc.reason


def _check_fields(body: dict[str, Any], allow: set[str] | frozenset[str] = frozenset()) -> str:
    for key, value in body.items():
        expected = _FIELD_TYPES.get(key)
        if expected is None:
            if key in allow:
                continue
            return f"unknown field {key!r}"
        if not isinstance(value, expected) or (expected is str and isinstance(value, bool)):
            return f"{key} has the wrong type"
        if key == "allowed_actions" and not all(isinstance(a, str) for a in body[key]):
            return "allowed_actions must be an array of strings"
    return ""


def busiest_window(arrivals: list[float], window: float = 1.0) -> int:
    """The most requests in any ``window`` seconds, from sorted arrival times (for rate checks)."""
    best = start = 0
    for end, t in enumerate(arrivals):
        while t - arrivals[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (login, password) if sep else None


def _id_list(raw: str) -> list[str]:
    raw = raw.strip()
    if raw.startswith("or(") and raw.endswith(")"):
        return [part.strip() for part in raw[3:-1].split(",") if part.strip()]
    return [raw]


def _filters(q: Any) -> Callable[[dict[str, Any]], bool] | None:
    """The list's ``type``, ``tenant_id`` and ``updated_at`` filters as one predicate (None: none)."""
    wanted = {name: set(_id_list(q[name])) for name in ("type", "tenant_id") if name in q}
    if len(wanted.get("type", ())) > 10:
        raise ValueError("at most 10 types per filter")
    when = _time_filter(q["updated_at"]) if "updated_at" in q else None
    if not wanted and when is None:
        return None

    def match(item: dict[str, Any]) -> bool:
        if any(item.get(name) not in values for name, values in wanted.items()):
            return False
        return when is None or when(_instant(item.get("updated_at") or "1970-01-01T00:00:00Z"))

    return match


def _time_filter(raw: str) -> Callable[[datetime], bool]:
    """``ge(t)``, ``gt(t)``, ``le(t)``, ``lt(t)``, ``range(a,b)`` (inclusive), ``xrange(a,b)``, or ``t``."""
    op, paren, rest = raw.strip().partition("(")
    if not paren:
        at = _instant(raw)
        return lambda t: t == at
    args = [_instant(a) for a in rest.rstrip(")").split(",")]
    low, high = args[0], args[-1]
    if op == "ge":
        return lambda t: t >= low
    if op == "gt":
        return lambda t: t > low
    if op == "le":
        return lambda t: t <= low
    if op == "lt":
        return lambda t: t < low
    if op == "range" and len(args) == 2:
        return lambda t: low <= t <= high
    if op == "xrange" and len(args) == 2:
        return lambda t: low < t < high
    raise ValueError(f"updated_at: unknown filter {raw!r} (ge, gt, le, lt, range, xrange)")


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"updated_at: not an RFC 3339 time: {text!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"updated_at: the time needs a zone: {text!r}")
    return value


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "yes")


class MockServer:
    """Serve a ``MockApi`` on a loopback port; ``async with MockServer() as server: server.url``."""

    def __init__(self, config: MockConfig | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.api = MockApi(config)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.api.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def serve_until_stopped(
        self,
        *,
        ready: Callable[[], object] | None = None,
        signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        """Serve until one of ``signals`` arrives, then close (saving the store if it persists).

        Without it, SIGTERM (what ``kill``, systemd and Docker send) ended the process before the
        store was saved: only SIGINT became an exception that ran the clean-up. ``ready`` is
        called once the handlers are in place, so a signal sent after what it prints is caught.
        """
        if self._runner is None:
            await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed = []
        try:
            for signum in signals:
                with contextlib.suppress(NotImplementedError, RuntimeError):  # not on the main thread
                    loop.add_signal_handler(signum, stop.set)
                    installed.append(signum)
            if ready is not None:
                ready()
            await stop.wait()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self.close()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MockServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
