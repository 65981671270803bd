"""Test doubles shared by the unit tests: a transport without sockets, a clock that never waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from yarl import URL

from bulkpatch.errors import TransportError
from bulkpatch.http.transport import Response
from bulkpatch.mock import MockConfig, MockServer

Handler = Callable[[str, str, bytes | None, Mapping[str, str] | None], "Response | TransportError"]


@dataclass
class Call:
    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]


@dataclass
class FakeTransport:
    """Answers each request with ``handler(method, url, body, headers)``; records every call."""

    handler: Handler
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    #: yield to the loop inside send, so concurrency is real
    yield_control: bool = True

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None = None
    ) -> Response:
        self.calls.append(Call(method, url, body, dict(headers or {})))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.yield_control:
                await asyncio.sleep(0)
            answer = self.handler(method, url, body, headers)
        finally:
            self.in_flight -= 1
        if isinstance(answer, TransportError):
            raise answer
        return answer

    async def close(self) -> None:
        return None


def ok(method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None) -> Response:
    return Response(204, None, b"")


class FakeClock:
    """A monotonic clock that ``sleep`` advances instead of waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def write(path: Path, text: str | bytes) -> Path:
    """Write ``text`` (UTF-8) or bytes to ``path`` and return it."""
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


class _NoUpload:
    output_size = 0


class CompatResponse(ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's new ``stream_writer`` argument
    (pnuckowski/aioresponses#289); pass ``response_class=CompatResponse`` until it is fixed."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoUpload())
        super().__init__(method, url, **kwargs)


class ThreadedMock:
    """The mock API served from a thread of its own, for tests that drive the CLI synchronously
    or in a subprocess. ``with ThreadedMock(config) as mock: mock.url, mock.api.counters``."""

    def __init__(self, config: MockConfig) -> None:
        self.server = MockServer(config)
        self.api = self.server.api
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> ThreadedMock:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
