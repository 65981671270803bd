"""One aiohttp server on 127.0.0.1 with the misbehaviours the transport tests need.

``/ok/…`` and ``/echo/…`` say what they got; ``/slow`` answers only when the test ends and
``/hold`` never; ``/drop`` hangs up; ``/big`` and ``/busy`` send bodies longer than a run keeps;
``/sized/N``, ``/redirect/STATUS``, ``/moved`` and ``/endless`` as named. ``entered`` is set when
a request reaches ``/slow`` or ``/hold``: the test awaits it instead of sleeping. The conftest
fixture ``http_server`` starts one per test, on the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from bulkpatch.http.transport import BODY_KEEP

CHUNK = 64 * 1024
ENDLESS_CAP = 256 * 2**20


@dataclass
class Endless:
    """What the endless handler saw: chunks written before the client went away."""

    chunks: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class LocalServer:
    url: str
    #: a request reached /slow or /hold: it is in flight
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    endless: Endless = field(default_factory=Endless)
    #: lets /slow answer (at the end of the test)
    release: asyncio.Event = field(default_factory=asyncio.Event)


async def _ok(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {"body": body.decode(), "auth": request.headers.get("Authorization"), "path": request.raw_path}
    )


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "body": (await request.read()).decode(),
            "auth": request.headers.get("Authorization"),
            "team": request.headers.get("X-Team"),
            "port": request.transport.get_extra_info("peername")[1] if request.transport else None,
        }
    )


async def _drop(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    return web.Response(status=204)


async def _big(request: web.Request) -> web.Response:
    return web.Response(status=500, body=b"x" * (BODY_KEEP * 2), headers={"Retry-After": "3"})


async def _busy(request: web.Request) -> web.Response:
    return web.Response(status=429, body=b"x" * (BODY_KEEP * 2), headers={"Retry-After": "7"})


async def _sized(request: web.Request) -> web.Response:
    """A body of the asked size that opens with the client's port (a reused connection keeps it)."""
    assert request.transport is not None
    port = b"%05d" % request.transport.get_extra_info("peername")[1]
    return web.Response(status=400, body=port.ljust(int(request.match_info["size"]), b"z"))


async def _redirect(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["status"]), headers={"Location": "/ok/elsewhere"})


async def _moved(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": "https://eu8.acronis.cloud/w/1"})


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[LocalServer]:
    server = LocalServer("")

    async def slow(request: web.Request) -> web.Response:
        server.entered.set()
        await server.release.wait()
        return web.Response(status=204)

    async def hold(request: web.Request) -> web.Response:
        server.entered.set()
        await asyncio.Event().wait()  # never answers; cancelled at cleanup
        raise AssertionError("unreachable")

    async def endless(request: web.Request) -> web.StreamResponse:
        """Chunks until the client hangs up; ends at ``ENDLESS_CAP`` only so that a client that
        reads everything fails the test instead of filling the machine's memory."""
        seen = server.endless
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
    for path, handler in [
        ("/ok/{tail:.*}", _ok),
        ("/echo/{tail:.*}", _echo),
        ("/slow", slow),
        ("/hold", hold),
        ("/drop", _drop),
        ("/big", _big),
        ("/busy", _busy),
        ("/sized/{size}", _sized),
        ("/redirect/{status}", _redirect),
        ("/moved", _moved),
        ("/endless", endless),
    ]:
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()
