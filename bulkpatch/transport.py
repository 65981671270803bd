"""The one place that speaks HTTP: a thin aiohttp client and the interface the pipeline needs.

Everything else in bulkpatch sees a ``Transport``: one async ``send`` that returns a ``Response``
or raises ``TransportError``, and ``close``. aiohttp's exceptions are translated here and nowhere
else, so tests can swap in a fake transport and run without sockets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bulkpatch.errors import TransportError

#: bytes of a response body kept (for error messages); the rest is dropped
BODY_KEEP = 64 * 1024


@dataclass(slots=True)
class Response:
    """What the pipeline needs of an HTTP response."""

    status: int
    #: the raw ``Retry-After`` header, if any
    retry_after: str | None
    #: the body, at most ``BODY_KEEP`` bytes of it
    body: bytes


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
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._limit = limit
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    def _open(self, url: URL) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ttl_dns_cache=300)
        # Proxies from the environment (HTTPS_PROXY, NO_PROXY) are looked up once here: with
        # trust_env=True aiohttp would look them, and ~/.netrc, up in a thread on every request.
        proxy, proxy_auth = None, None
        with contextlib.suppress(LookupError):
            proxy, proxy_auth = get_env_proxy_for_url(url)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
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
        try:
            async with session.request(
                method, target, data=body, headers=headers, allow_redirects=False
            ) as resp:
                content = await resp.read()
                return Response(resp.status, resp.headers.get("Retry-After"), content[:BODY_KEEP])
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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
