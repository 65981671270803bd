"""Test helpers for code that uses bulkpatch: a transport that answers from a function.

>>> from bulkpatch.testing import MockTransport, Response                 # doctest: +SKIP
>>> transport = MockTransport(lambda request: Response(204))
>>> bulkpatch.run(rows, base_url="https://api.test", ledger=os.devnull, transport=transport)
>>> [r.url for r in transport.requests]

No socket is opened; every request is kept in ``requests``. The handler may return a
``Response`` or raise ``TransportError`` (``kind`` "connect", "timeout" or "disconnect") to act
out a network failure.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bulkpatch.errors import TransportError
from bulkpatch.http.transport import Response

__all__ = ["MockTransport", "Response", "SentRequest", "TransportError"]


@dataclass(frozen=True)
class SentRequest:
    """One request as the transport got it."""

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[SentRequest], "Response | Awaitable[Response]"]


class MockTransport:
    """A ``Transport`` whose answers come from ``handler(request)`` (sync or async)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        #: every request sent, in order
        self.requests: list[SentRequest] = []

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None = None
    ) -> Response:
        request = SentRequest(method, url, body, dict(headers or {}))
        self.requests.append(request)
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if not isinstance(answer, Response):
            raise TypeError(f"the MockTransport handler returned {type(answer).__name__}, not a Response")
        return answer

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> MockTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
