"""A server whose paging never ends: every read ends (with a clear error, or by stopping), never loops.

The server on 127.0.0.1 misbehaves in one way per test; after ``CAP`` requests it gives up and
answers a last page, so that a client that loops fails the test instead of hanging it.
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import write

from bulkpatch.engine.run import Run
from bulkpatch.http.transport import AiohttpTransport
from bulkpatch.ops.export import export_workloads
from bulkpatch.ops.live import LiveReader, LiveReadError
from bulkpatch.ops.paging import EMPTY_PAGES, PagingWatch
from bulkpatch.ops.plan import plan_rows
from bulkpatch.ops.verify import verify_rows
from bulkpatch.options import RunOptions
from bulkpatch.rows.reader import Format

CAP = 200
IDS = ["w-1", "w-2"]


@dataclass
class Misbehaving:
    mode: str = "same cursor"
    requests: int = 0


STATE = web.AppKey("state", Misbehaving)


def workload(wid: str) -> dict[str, Any]:
    return {"id": wid, "name": wid, "enabled": True, "attributes": {}, "allowed_actions": []}


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Misbehaving]]:
    async def listing(request: web.Request) -> web.Response:
        state = request.app[STATE]
        state.requests += 1
        n = state.requests
        if n >= CAP:
            return web.json_response({"items": [], "paging": {"cursors": {}}})
        asked = request.query.get("workload_id")
        if asked is not None:  # a lookup: the asked ids, and a cursor all the same
            ids = asked.removeprefix("or(").removesuffix(")").split(",")
            items = [workload(i) for i in ids]
            return web.json_response({"items": items, "paging": {"cursors": {"after": f"c{n}"}}})
        items, after = [workload(i) for i in IDS], "same"
        if state.mode == "same cursor":
            items = [workload(f"w-{n}")]  # new items, so that only the cursor tells
        elif state.mode == "fresh cursor, same page":
            after = f"c{n}"
        elif state.mode == "two pages in a cycle":
            after = "a" if n % 2 else "b"
            items = [workload(f"w-{n % 2}")]
        elif state.mode == "empty pages":
            items, after = [], f"c{n}"
        return web.json_response({"items": items, "paging": {"cursors": {"after": after}}})

    app = web.Application()
    app[STATE] = Misbehaving()
    app.router.add_get("/api/workload_management/v5/workloads", listing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", app[STATE]
    await runner.cleanup()


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("same cursor", "paging cursor 'same' twice"),
        ("fresh cursor, same page", "page 2 of the listing repeats workloads already listed"),
        ("two pages in a cycle", "page 3 of the listing repeats workloads already listed"),
        ("empty pages", f"{EMPTY_PAGES} empty pages in a row"),
    ],
)
async def test_export_ends_with_an_error_when_the_paging_does_not_advance(
    server: tuple[str, Misbehaving], mode: str, says: str
) -> None:
    url, state = server
    state.mode = mode
    out = io.BytesIO()
    async with AiohttpTransport(limit=4, timeout=5) as transport:
        reader = LiveReader(transport, url)
        with pytest.raises(LiveReadError, match=says):
            await export_workloads(reader, out, fmt=Format.JSONL)
    assert state.requests <= EMPTY_PAGES + 1


async def test_plan_verify_and_only_changed_stop_paging_once_every_id_is_seen(
    server: tuple[str, Misbehaving], tmp_path: Path
) -> None:
    url, state = server
    source = write(tmp_path / "in.csv", "workload_id,name\nw-1,renamed\nw-2,w-2\n")
    options = RunOptions(input=str(source), base_url=url, ledger=os.devnull)
    async with AiohttpTransport(limit=4, timeout=5) as transport:
        planned = await plan_rows(options, transport, snapshot=str(tmp_path / "before.csv"))
        assert (planned.to_change, planned.unchanged, state.requests) == (1, 1, 1)
        verified = await verify_rows(options, transport)
        assert (verified.drifted, verified.matching, state.requests) == (1, 1, 2)


async def test_run_only_changed_against_an_endless_cursor(
    server: tuple[str, Misbehaving], tmp_path: Path
) -> None:
    url, state = server
    source = write(tmp_path / "in.csv", "workload_id,name\nw-1,w-1\nw-2,w-2\n")
    options = RunOptions(input=str(source), base_url=url, only_changed=True)
    result = await Run(options).execute()
    assert (result.exit_code, state.requests) == (0, 1)  # both unchanged: nothing sent


def test_the_watch_keeps_a_bounded_window_of_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bulkpatch.ops.paging.WINDOW", 4)
    watch = PagingWatch()
    for page in range(10):
        assert watch.problem([{"id": f"{page}-{i}"} for i in range(2)], f"c{page}") is None
    assert watch.problem([{"id": "9-0"}, {"id": "9-1"}], "c-new") is not None
    assert watch.problem([{"id": "0-0"}, {"id": "0-1"}], "c-newer") is None  # forgotten: no false alarm
    assert watch.problem([{"id": "x"}, {"id": "9-1"}], None) is None  # a partial repeat is no loop
