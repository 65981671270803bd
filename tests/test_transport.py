"""The aiohttp transport against real servers on 127.0.0.1, and aioresponses."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest
from aioresponses import aioresponses
from helpers import CompatResponse
from local_server import CHUNK, ENDLESS_CAP, LocalServer

from bulkpatch.errors import TransportError
from bulkpatch.http.transport import BODY_KEEP, AiohttpTransport


async def test_sends_method_body_headers_and_encoded_path(http_server: LocalServer) -> None:
    async with AiohttpTransport(limit=4, timeout=5, headers={"X-Team": "ops"}) as transport:
        resp = await transport.send(
            "PATCH", f"{http_server.url}/ok/a%2Fb%2E%2E", b'{"x":1}', {"Authorization": "Bearer t"}
        )
    assert resp.status == 200
    data = orjson.loads(resp.body)
    # The encoded segment reaches the server as sent: never decoded into a second segment.
    assert data == {"body": '{"x":1}', "auth": "Bearer t", "path": "/ok/a%2Fb%2E%2E"}


async def test_timeout_is_a_transport_error(http_server: LocalServer) -> None:
    async with AiohttpTransport(limit=1, timeout=0.2) as transport:
        with pytest.raises(TransportError) as info:
            await transport.send("PATCH", f"{http_server.url}/slow", b"{}")
    assert info.value.kind == "timeout"


async def test_dropped_connection_is_a_transport_error(http_server: LocalServer) -> None:
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        with pytest.raises(TransportError) as info:
            await transport.send("PATCH", f"{http_server.url}/drop", b"{}")
    assert info.value.kind == "disconnect"


async def test_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        with pytest.raises(TransportError) as info:
            await transport.send("PATCH", f"http://127.0.0.1:{port}/x", b"{}")
    assert info.value.kind == "connect"


async def test_large_error_bodies_are_cut_and_retry_after_kept(http_server: LocalServer) -> None:
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        resp = await transport.send("PATCH", f"{http_server.url}/big", b"{}")
        again = await transport.send("PATCH", f"{http_server.url}/ok/x", b"{}")  # the connection is reusable
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


async def test_timeout_does_not_swallow_an_outside_cancel(http_server: LocalServer) -> None:
    async with AiohttpTransport(limit=1, timeout=0.2) as transport:
        task = asyncio.ensure_future(transport.send("PATCH", f"{http_server.url}/slow", b"{}"))
        await http_server.entered.wait()  # the request is in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_connection_is_reusable_after_a_timeout(http_server: LocalServer) -> None:
    async with AiohttpTransport(limit=1, timeout=0.2) as transport:
        with pytest.raises(TransportError):
            await transport.send("PATCH", f"{http_server.url}/slow", b"{}")
        resp = await transport.send("PATCH", f"{http_server.url}/ok/x", b"{}")
    assert resp.status == 200


async def test_an_endless_body_is_cut_at_body_keep_and_its_connection_dropped(
    http_server: LocalServer,
) -> None:
    async with AiohttpTransport(limit=1, timeout=60) as transport:
        resp = await transport.send("PATCH", f"{http_server.url}/endless", b"{}")
        seen = http_server.endless
        await seen.done.wait()  # a write failed: the client hung up (or, reading it all, did not)
        again = await transport.send("PATCH", f"{http_server.url}/ok/x", b"{}")  # a fresh connection works
    assert (resp.status, resp.body) == (502, b"y" * BODY_KEEP)
    # What the server got out before noticing is bounded by socket buffers, not by the body.
    assert seen.chunks * CHUNK < ENDLESS_CAP // 4, seen.chunks
    assert again.status == 200


# A body only a little longer than BODY_KEEP may have arrived whole, and its connection is clean
# for reuse either way; 64 times longer cannot have: aiohttp stops reading at 128 KiB buffered.
@pytest.mark.parametrize(("size", "reused"), [(5, True), (BODY_KEEP, True), (BODY_KEEP * 64, False)])
async def test_a_body_read_to_its_end_keeps_the_connection_a_longer_one_closes_it(
    http_server: LocalServer, size: int, reused: bool
) -> None:
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        first = await transport.send("PATCH", f"{http_server.url}/sized/{size}", b"{}")
        second = await transport.send("PATCH", f"{http_server.url}/sized/5", b"{}")
    assert (first.status, len(first.body), first.body[5:].strip(b"z")) == (400, min(size, BODY_KEEP), b"")
    assert (first.body[:5] == second.body[:5]) == reused


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_not_followed_and_says_where_it_points(
    http_server: LocalServer, status: int
) -> None:
    async with AiohttpTransport(limit=1, timeout=5) as transport:
        resp = await transport.send("PATCH", f"{http_server.url}/redirect/{status}", b"{}")
        plain = await transport.send("PATCH", f"{http_server.url}/ok/x", b"{}")
    assert (resp.status, resp.location) == (status, "/ok/elsewhere")
    assert plain.location is None
