"""Where the ``Authorization`` header comes from: nothing, a fixed token, or OAuth2 client credentials.

Secrets live only in these objects; their ``repr`` hides them, and no error message quotes them.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Protocol

import orjson

from bulkpatch.errors import AuthError, TransportError
from bulkpatch.http.transport import Transport

#: renew a token when fewer than this many seconds remain (Acronis' own examples use 900)
RENEW_MARGIN = 900.0
_TOKEN_ATTEMPTS = 3


class Auth(Protocol):
    """Supplies the ``Authorization`` header value for each request."""

    #: True when a 401 can be cured by fetching a new token
    renewable: bool

    async def header(self) -> str | None:
        """The header value to send now, or None for no header."""
        ...

    async def renew(self, stale: str | None) -> None:
        """Drop ``stale`` (the value a 401 came back for) and get a fresh one."""
        ...


class NoAuth:
    """Send no ``Authorization`` header."""

    renewable = False

    async def header(self) -> str | None:
        return None

    async def renew(self, stale: str | None) -> None:
        return None


class BearerToken:
    """A fixed bearer token, e.g. from ``BULKPATCH_TOKEN``."""

    renewable = False

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ValueError("the bearer token is empty")
        self._value = f"Bearer {token.strip()}"

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"

    async def header(self) -> str | None:
        return self._value

    async def renew(self, stale: str | None) -> None:
        return None


class ClientCredentials:
    """OAuth2 client-credentials tokens, shared by all workers and renewed before they expire.

    At most one request to the token endpoint is in flight at a time: workers that find the
    token stale wait for the renewal under way instead of starting their own.
    """

    renewable = True

    def __init__(
        self,
        transport: Transport,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        clock: Callable[[], float] = time.time,
        on_renew: Callable[[float], None] | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("client id and client secret must both be set")
        self._transport = transport
        self._token_url = token_url
        pair = f"{client_id}:{client_secret}".encode()
        self._basic = "Basic " + base64.b64encode(pair).decode("ascii")
        self._clock = clock
        self._on_renew = on_renew
        self._on_token = on_token
        if on_token is not None:
            on_token(self._basic.removeprefix("Basic "))
        self._value: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ClientCredentials(token_url={self._token_url!r}, secret=<hidden>)"

    async def header(self) -> str | None:
        if self._value is not None and self._clock() < self._renew_at:
            return self._value
        return await self._refresh(self._value)

    async def renew(self, stale: str | None) -> None:
        await self._refresh(stale)

    async def _refresh(self, stale: str | None) -> str:
        async with self._lock:
            # Another worker may have renewed while this one waited for the lock.
            if self._value is not None and self._value != stale and self._clock() < self._renew_at:
                return self._value
            self._value = None
            token, lifetime = await self._fetch()
            if self._on_token is not None:
                self._on_token(token)
            now = self._clock()
            self._value = f"Bearer {token}"
            self._renew_at = now + lifetime - min(RENEW_MARGIN, lifetime / 4)
            if self._on_renew is not None:
                self._on_renew(lifetime)
            return self._value

    async def _fetch(self) -> tuple[str, float]:
        body = b"grant_type=client_credentials"
        headers = {
            "Authorization": self._basic,
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        where = f"token endpoint {self._token_url}"
        problem = ""
        for attempt in range(1, _TOKEN_ATTEMPTS + 1):
            try:
                resp = await self._transport.send("POST", self._token_url, body, headers)
            except TransportError as exc:
                problem = f"{where}: {exc}"
            else:
                if resp.status == 200:
                    return _parse_token(resp.body, where, self._clock())
                if resp.status in (400, 401, 403):
                    raise AuthError(
                        f"{where} refused the client credentials (HTTP {resp.status});"
                        " check BULKPATCH_CLIENT_ID and BULKPATCH_CLIENT_SECRET"
                    )
                problem = f"{where} answered HTTP {resp.status}"
            if attempt < _TOKEN_ATTEMPTS:
                await asyncio.sleep(0.5 * attempt)
        raise AuthError(problem)


def _parse_token(raw: bytes, where: str, now: float) -> tuple[str, float]:
    try:
        data = orjson.loads(raw)
        token = data["access_token"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise AuthError(f"{where} answered 200 without an access_token") from None
    if not isinstance(token, str) or not token:
        raise AuthError(f"{where} answered an empty access_token")
    if not token.isascii() or not token.isprintable() or " " in token:
        # It goes into a header: a newline there would break (or forge) the request.
        raise AuthError(f"{where} answered an access_token that is not a valid header value")
    lifetime = 3600.0
    if isinstance(data.get("expires_on"), (int, float)):
        lifetime = float(data["expires_on"]) - now
    elif isinstance(data.get("expires_in"), (int, float)):
        lifetime = float(data["expires_in"])
    return token, max(lifetime, 1.0)


def token_url_for(base_url: str) -> str:
    """The default token endpoint of an Acronis data center."""
    return base_url.rstrip("/") + "/api/2/idp/token"
