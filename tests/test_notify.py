"""``--notify``: one JSON POST through the project's transport; a failing webhook is one reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bulkpatch.cli.telling import webhook_payload
from bulkpatch.errors import ConfigError
from bulkpatch.http.notify import check_webhook, host_of, post_summary
from bulkpatch.records.outcome import Outcome

SECRET_PATH = "/hooks/T0/B0/s3cr3t"


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[TestServer, list[web.Request], list[bytes]]]:
    seen: list[web.Request] = []
    bodies: list[bytes] = []
    hang = asyncio.Event()

    async def ok(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        return web.Response(status=200, text="ok")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    async def slow(request: web.Request) -> web.Response:
        await hang.wait()  # never answers: the sender's timeout must end it
        return web.Response()

    app = web.Application()
    app.router.add_post(SECRET_PATH, ok)
    app.router.add_post("/broken", broken)
    app.router.add_post("/slow", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, seen, bodies
    hang.set()
    await server.close()


async def test_the_summary_arrives_as_json_with_text_and_exit_code(webhook) -> None:  # type: ignore[no-untyped-def]
    server, seen, bodies = webhook
    outcome = Outcome(1, 1.0, 2.0, began=True, rows={"ok": 3, "failed": 1}, input="a.csv", ledger="a.ledger")
    assert await post_summary(str(server.make_url(SECRET_PATH)), webhook_payload(outcome, host="box")) is None
    (body,) = bodies
    payload = orjson.loads(body)
    assert payload["exit_code"] == 1 and payload["rows"] == {"ok": 3, "failed": 1}
    assert payload["text"].startswith("bulkpatch run on box of a.csv: finished with rows to fix (exit 1)")
    assert seen[0].headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(("path", "reason"), [("/broken", "HTTP 500"), ("/slow", "no answer within 0.2 s")])
async def test_a_failing_webhook_gives_a_reason_without_its_path(webhook, path: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    server, _, _ = webhook
    problem = await post_summary(str(server.make_url(path)), {"text": "x"}, answer_within=0.2)
    assert problem == f"notifying http://127.0.0.1:{server.port} failed: {reason}"


async def test_a_refused_connection_names_the_host_only(webhook) -> None:  # type: ignore[no-untyped-def]
    server, _, _ = webhook
    port = server.port
    url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    await server.close()
    problem = await post_summary(url, {"text": "x"})
    assert problem is not None and problem.startswith(f"notifying http://127.0.0.1:{port} failed: cannot")
    assert "s3cr3t" not in problem


def test_only_http_urls_are_webhooks() -> None:
    check_webhook("https://hooks.slack.com/services/T/B/x")
    for bad in ("hooks.slack.com/x", "ftp://host/x", "https://"):
        with pytest.raises(ConfigError, match="--notify"):
            check_webhook(bad)
    assert host_of("https://user:pw@hooks.example:8443/a/b?c=d") == "https://hooks.example:8443"
