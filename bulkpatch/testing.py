"""Test helpers for code that uses bulkpatch: a transport that answers from a function.

>>> from bulkpatch.testing import MockTransport, Response                 # doctest: +SKIP
>>> transport = MockTransport(lambda request: Response(204))
>>> bulkpatch.run(rows, base_url="https://api.test", ledger=os.devnull, transport=transport)
>>> [r.url for r in transport.requests]

No socket is opened; every request is kept in ``requests``, and ``max_in_flight`` tells how many
were ever sent at once. The handler may return a ``Response`` or raise ``TransportError``
(``kind`` "connect", "timeout" or "disconnect") to act out a network failure.
``MockTransport.script(answer, ...)`` answers the calls in turn instead. Each send first awaits
``sleep(latency)`` — a real yield to the event loop, so that requests do overlap; pass a fake
``sleep`` to let latency pass in no time.
"""

from __future__ import annotations

import asyncio
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

    def __init__(
        self,
        handler: Handler,
        *,
        latency: float | Callable[[SentRequest], float] = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._handler = handler
        self._latency = latency
        self._sleep = sleep
        #: every request sent, in order
        self.requests: list[SentRequest] = []
        #: requests sent and not answered yet, and the most there ever were at once
        self.in_flight = 0
        self.max_in_flight = 0

    @classmethod
    def script(
        cls,
        *answers: Response | TransportError,
        latency: float | Callable[[SentRequest], float] = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> MockTransport:
        """A transport that answers the n-th call with ``answers[n]`` (a ``TransportError`` is
        raised); a call past the end is an ``AssertionError``."""
        turns = iter(answers)

        def next_answer(request: SentRequest) -> Response:
            answer = next(turns, None)
            if answer is None:
                raise AssertionError(
                    f"MockTransport.script ran out of answers at {request.method} {request.url}"
                )
            if isinstance(answer, TransportError):
                raise answer
            return answer

        return cls(next_answer, latency=latency, sleep=sleep)

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None = None
    ) -> Response:
        request = SentRequest(method, url, body, dict(headers or {}))
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            latency = self._latency(request) if callable(self._latency) else self._latency
            await self._sleep(latency)
            answer = self._handler(request)
            if inspect.isawaitable(answer):
                answer = await answer
        finally:
            self.in_flight -= 1
        if not isinstance(answer, Response):
            raise TypeError(f"the MockTransport handler returned {type(answer).__name__}, not a Response")
        return answer

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> MockTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
