"""The aiohttp transport against real servers on 127.0.0.1, and aioresponses."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from aioresponses import aioresponses
from helpers import CompatResponse

from bulkpatch.errors import TransportError
from bulkpatch.http.transport import BODY_KEEP, AiohttpTransport

SLOW_ENTERED = asyncio.Event()
SERVERS: dict[str, web.Application] = {}
CHUNK = 64 * 1024
ENDLESS_CAP = 256 * 2**20


@dataclass
class Endless:
    """What the endless handler saw: chunks written before the client went away."""

    chunks: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


ENDLESS = web.AppKey("endless", Endless)


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

    async def sized(request: web.Request) -> web.Response:
        """A body of the asked size that opens with the client's port (a reused connection keeps it)."""
        assert request.transport is not None
        port = b"%05d" % request.transport.get_extra_info("peername")[1]
        return web.Response(status=400, body=port.ljust(int(request.match_info["size"]), b"z"))

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["status"]), headers={"Location": "/ok/elsewhere"})

    async def endless(request: web.Request) -> web.StreamResponse:
        """Chunks until the client hangs up; ends at ``ENDLESS_CAP`` only so that a client that
        reads everything fails the test instead of filling the machine's memory."""
        seen: Endless = request.app[ENDLESS]
        resp = web.StreamResponse(status=502)  # chunked: no length announced
        try:
            await resp.prepare(request)
            chunk = b"y" * CHUNK
            while seen.chunks * CHUNK < ENDLESS_CAP:
                await resp.write(chunk)
                seen.chunks += 1
            await resp.write_eof()
        except ConnectionError:
            pass  # the client hung up: what the test waits for
        finally:
            seen.done.set()
        return resp

    app = web.Application()
    app[ENDLESS] = Endless()
    app.router.add_route("*", "/sized/{size}", sized)
    app.router.add_route("*", "/redirect/{status}", redirect)
    app.router.add_route("*", "/endless", endless)
    app.router.add_route("*", "/ok/{tail:.*}", ok)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/drop", drop)
    app.router.add_route("*", "/big", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    SERVERS[url := f"http://127.0.0.1:{runner.addresses[0][1]}"] = app
    yield url
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


async def test_an_endless_body_is_cut_at_body_keep_and_its_connection_dropped(server: str) -> None:
    async with AiohttpTransport(limit=1, timeout=60) as transport:
        resp = await transport.send("PATCH", f"{server}/endless", b"{}")
        seen: Endless = SERVERS[server][ENDLESS]
        await seen.done.wait()  # a write failed: the client hung up (or, reading it all, did not)
        again = await transport.send("PATCH", f"{server}/ok/x", b"{}")  # a fresh connection works
    assert (resp.status, resp.body) == (502, b"y" * BODY_KEEP)
    # What the server got out before noticing is bounded by socket buffers, not by the body.
    assert seen.chunks * CHUNK < ENDLESS_CAP // 4, seen.chunks
    assert again.status == 200


# A body only a little longer than BODY_KEEP may have arrived whole, and its connection is clean
# for reuse either way; 64 times longer cannot have: aiohttp stops reading at 128 KiB buffered.
@pytest.mark.parametrize(("size", "reused"), [(5, True), (BODY_KEEP, True), (BODY_KEEP * 64, False)])
async def test_a_body_read_to_its_end_keeps_the_connection_a_longer_one_closes_it(
    server: str, size: int, reused: bool
) -> None:
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        first = await transport.send("PATCH", f"{server}/sized/{size}", b"{}")
        second = await transport.send("PATCH", f"{server}/sized/5", b"{}")
    assert (first.status, len(first.body), first.body[5:].strip(b"z")) == (400, min(size, BODY_KEEP), b"")
    assert (first.body[:5] == second.body[:5]) == reused


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed_and_says_where_it_points(server: str, status: int) -> None:
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        resp = await transport.send("PATCH", f"{server}/redirect/{status}", b"{}")
        plain = await transport.send("PATCH", f"{server}/ok/x", b"{}")
    assert (resp.status, resp.location) == (status, "/ok/elsewhere")
    assert plain.location is None
