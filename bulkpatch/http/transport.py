"""The one place that speaks HTTP: a thin aiohttp client and the interface the pipeline needs.

Everything else in bulkpatch sees a ``Transport``: one async ``send`` that returns a ``Response``
or raises ``TransportError``, and ``close``. aiohttp's exceptions are translated here and nowhere
else, so tests can swap in a fake transport and run without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bulkpatch.errors import TransportError

_now = time.monotonic
#: the headers that announce a quota (``engine/quota.py`` reads them), in lower case
QUOTA_HEADERS = (
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)
#: bytes of a response body kept (for error messages); the rest is never read
BODY_KEEP = 64 * 1024


@dataclass(slots=True)
class Response:
    """What the pipeline needs of an HTTP response."""

    status: int
    #: the raw ``Retry-After`` header, if any
    retry_after: str | None = None
    #: the body, at most ``BODY_KEEP`` bytes of it
    body: bytes = b""
    #: the raw ``Location`` header, if any: where a 3xx (never followed) pointed
    location: str | None = None
    #: the quota headers (``QUOTA_HEADERS``) by lower-case name, if the answer announced one
    quota: dict[str, str] | None = None


class Transport(Protocol):
    """Sends one request; the pipeline's only view of the network."""

    async def send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str] | None = None,
    ) -> Response: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """A ``Transport`` over one shared aiohttp session with keep-alive.

    ``limit`` caps open connections; it must be at least the number of concurrent senders
    (aiohttp's default of 100 would otherwise quietly cap a higher ``--concurrency``).
    """

    def __init__(
        self,
        *,
        limit: int,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        body_limit: int = BODY_KEEP,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._limit = limit
        self._timeout = timeout
        self._headers = dict(headers or {})
        #: bytes of an answer kept; readers of JSON pages (export, plan) need more than BODY_KEEP
        self._body_limit = body_limit
        self._session: aiohttp.ClientSession | None = None
        # Per-attempt timeouts: one watchdog task instead of a timer per request (aiohttp's
        # own per-request timeout machinery cost ~13% of bulkpatch's throughput at full speed).
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def _open(self, url: URL) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ttl_dns_cache=300)
        # Proxies from the environment (HTTPS_PROXY, NO_PROXY) are looked up once here: with
        # trust_env=True aiohttp would look them, and ~/.netrc, up in a thread on every request.
        proxy, proxy_auth = None, None
        with contextlib.suppress(LookupError):
            proxy, proxy_auth = get_env_proxy_for_url(url)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
            headers=self._headers,
            raise_for_status=False,
            trust_env=False,
            proxy=proxy,
            proxy_auth=proxy_auth,
        )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        target = URL(url, encoded=True)
        session = self._session or self._open(target)
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines
        deadlines[task] = _now() + self._timeout
        try:
            # Awaited rather than entered: the context manager's two extra frames cost ~2% at
            # full speed.
            resp = await session.request(method, target, data=body, headers=headers, allow_redirects=False)
            try:
                content = await _read_head(resp.content, self._body_limit)
            except BaseException:
                resp.close()
                raise
            if resp.content.at_eof():
                resp.release()  # the connection goes back to the pool
            else:
                # Draining the rest could take as long as the server likes (or forever): a new
                # connection costs less than reading a body nobody keeps.
                resp.close()
            got = resp.headers
            quota = None
            if "RateLimit" in got or "RateLimit-Remaining" in got or "X-RateLimit-Remaining" in got:
                quota = {name: got[name] for name in QUOTA_HEADERS if name in got}
            return Response(resp.status, got.get("Retry-After"), content, got.get("Location"), quota)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            if task.uncancel():
                raise  # someone else cancelled this task too: honour that
            raise TransportError("timeout", f"no answer within {self._timeout:g} s") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise TransportError("timeout", "timed out") from None
        except aiohttp.ClientConnectorError as exc:
            raise TransportError("connect", f"cannot connect: {exc.os_error.strerror or exc}") from None
        except aiohttp.ServerDisconnectedError:
            raise TransportError("disconnect", "server closed the connection") from None
        except aiohttp.ClientPayloadError:
            raise TransportError("disconnect", "response body cut short") from None
        except aiohttp.ClientError as exc:
            raise TransportError("disconnect", f"{type(exc).__name__}: {exc}") from None
        finally:
            del deadlines[task]

    async def _watch(self) -> None:
        """Cancel the requests that outlive their deadline; checks a few times per timeout."""
        interval = min(max(self._timeout / 8, 0.01), 1.0)
        while True:
            await asyncio.sleep(interval)
            now = _now()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    async def __aenter__(self) -> AiohttpTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_head(content: aiohttp.StreamReader, limit: int = BODY_KEEP) -> bytes:
    """At most ``limit`` bytes of a body: a 1 GiB answer must not cost 1 GiB of memory."""
    parts: list[bytes] = []
    size = 0
    while size < limit and not content.at_eof():  # at EOF at once for a 204: no await
        chunk = await content.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)  # one part: the same bytes object, no copy
