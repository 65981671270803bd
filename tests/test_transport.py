"""The aiohttp transport against real servers on 127.0.0.1, and aioresponses."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from aioresponses import aioresponses
from fakes import CompatResponse

from bulkpatch.errors import TransportError
from bulkpatch.transport import BODY_KEEP, AiohttpTransport

SLOW_ENTERED = asyncio.Event()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {"body": body.decode(), "auth": request.headers.get("Authorization"), "path": request.raw_path}
        )

    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        SLOW_ENTERED.set()
        await release.wait()
        return web.Response(status=204)

    async def drop(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=204)

    async def big(request: web.Request) -> web.Response:
        return web.Response(status=500, body=b"x" * (BODY_KEEP * 2), headers={"Retry-After": "3"})

    app = web.Application()
    app.router.add_route("*", "/ok/{tail:.*}", ok)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/drop", drop)
    app.router.add_route("*", "/big", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    release.set()
    await runner.cleanup()


async def test_sends_method_body_headers_and_encoded_path(server: str) -> None:
    async with AiohttpTransport(limit=4, timeout=5, headers={"X-Team": "ops"}) as transport:
        resp = await transport.send(
            "PATCH", f"{server}/ok/a%2Fb%2E%2E", b'{"x":1}', {"Authorization": "Bearer t"}
        )
    assert resp.status == 200
    data = orjson.loads(resp.body)
    # The encoded segment reaches the server as sent: never decoded into a second segment.
    assert data == {"body": '{"x":1}', "auth": "Bearer t", "path": "/ok/a%2Fb%2E%2E"}


async def test_timeout_is_a_transport_error(server: str) -> None:
    async with AiohttpTransport(limit=1, timeout=0.2) as transport:
        with pytest.raises(TransportError) as info:
            await transport.send("PATCH", f"{server}/slow", b"{}")
    assert info.value.kind == "timeout"


async def test_dropped_connection_is_a_transport_error(server: str) -> None:
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        with pytest.raises(TransportError) as info:
            await transport.send("PATCH", f"{server}/drop", b"{}")
    assert info.value.kind == "disconnect"


async def test_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        with pytest.raises(TransportError) as info:
            await transport.send("PATCH", f"http://127.0.0.1:{port}/x", b"{}")
    assert info.value.kind == "connect"


async def test_large_error_bodies_are_cut_and_retry_after_kept(server: str) -> None:
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        resp = await transport.send("PATCH", f"{server}/big", b"{}")
        again = await transport.send("PATCH", f"{server}/ok/x", b"{}")  # the connection is reusable
    assert (resp.status, resp.retry_after, len(resp.body)) == (500, "3", BODY_KEEP)
    assert again.status == 200


async def test_with_aioresponses() -> None:
    with aioresponses() as mocked:
        mocked.patch(
            "http://api.test/w/1",
            status=429,
            headers={"Retry-After": "9"},
            body=b"slow down",
            response_class=CompatResponse,
        )
        async with AiohttpTransport(limit=1, timeout=5) as transport:
            resp = await transport.send("PATCH", "http://api.test/w/1", b"{}")
    assert (resp.status, resp.retry_after, resp.body) == (429, "9", b"slow down")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="limit"):
        AiohttpTransport(limit=0, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        AiohttpTransport(limit=1, timeout=0)


async def test_timeout_does_not_swallow_an_outside_cancel(server: str) -> None:
    async with AiohttpTransport(limit=1, timeout=0.2) as transport:
        SLOW_ENTERED.clear()
        task = asyncio.ensure_future(transport.send("PATCH", f"{server}/slow", b"{}"))
        await SLOW_ENTERED.wait()  # the request is in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_connection_is_reusable_after_a_timeout(server: str) -> None:
    async with AiohttpTransport(limit=1, timeout=0.2) as transport:
        with pytest.raises(TransportError):
            await transport.send("PATCH", f"{server}/slow", b"{}")
        resp = await transport.send("PATCH", f"{server}/ok/x", b"{}")
    assert resp.status == 200
