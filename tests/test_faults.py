"""End to end against a server with deterministic faults, per workload id, on 127.0.0.1.

The server is written here with aiohttp.web (not the project's mock), so the client is checked
against an independent implementation of each fault.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner
from helpers import write

from bulkpatch.cli.main import cli
from bulkpatch.records.report import summarise

TOKEN = "tok-2b7f0c9e"


class FaultyServer:
    """Each id names its fault: ``503x2-…`` fails twice, ``429-…`` once with Retry-After: 1,
    ``drop-…`` drops the first connection, ``slow-…`` answers the first time after the client's
    timeout, ``404-…``/``400-…`` always refuse, anything else gets 200 with a body."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self.by_status: Counter[int] = Counter()
        self.applied: dict[str, dict[str, object]] = {}
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        wid = request.match_info["wid"]
        self.seen[wid] += 1
        self.times[wid].append(time.monotonic())
        n = self.seen[wid]
        kind = wid.split("-")[0]
        status = 200
        headers = {}
        if kind == "503x2" and n <= 2:
            status = 503
        elif kind == "429" and n == 1:
            status, headers = 429, {"Retry-After": "1"}
        elif kind == "drop" and n == 1:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=204)
        elif kind == "slow" and n == 1:
            # Far beyond the client's timeout (--timeout 1.5 below), so no load makes it in time.
            await asyncio.wait_for(self.release.wait(), 6.0)
        elif kind in ("404", "400"):
            status = int(kind)
        self.by_status[status] += 1
        if status != 200:
            body = {"error": {"code": "Nope", "message": f"{kind} for {wid}"}}
            return web.json_response(body, status=status, headers=headers)
        self.applied[wid] = await request.json()
        return web.json_response({"id": wid, "updated": True})


@pytest.fixture
async def faulty() -> AsyncIterator[tuple[FaultyServer, str]]:
    server = FaultyServer()
    app = web.Application()
    app.router.add_patch("/api/workload_management/v5/workloads/{wid}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield server, f"http://127.0.0.1:{runner.addresses[0][1]}"
    server.release.set()
    await runner.cleanup()


@pytest.mark.slow
async def test_transient_faults_end_ok_permanent_ones_fail_once(
    tmp_path: Path, faulty: tuple[FaultyServer, str]
) -> None:
    server, base = faulty
    ids = [f"{kind}-{i}" for kind in ("503x2", "429", "drop", "slow", "404", "400", "fine") for i in range(3)]
    source = write(tmp_path / "f.csv", "workload_id,name\n" + "".join(f"{w},n-{w}\n" for w in ids))
    args = ["run", str(source), "--base-url", base, "--timeout", "1.5", "--max-attempts", "5", "-q"]
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, args, env={"BULKPATCH_TOKEN": TOKEN}, catch_exceptions=False
    )
    assert result.exit_code == 1, result.output
    assert TOKEN not in result.output + result.stderr
    ledger = Path(f"{source}.ledger.jsonl")
    assert TOKEN not in ledger.read_text()
    rows = {r["key"]: r for r in map(orjson.loads, ledger.read_bytes().splitlines()) if r["type"] == "row"}
    for wid in ids:
        kind = wid.split("-")[0]
        record = rows[wid]
        if kind in ("404", "400"):
            assert (record["status"], record["attempts"], server.seen[wid]) == ("failed", 1, 1)
            assert record["error"] == f"HTTP {kind}: Nope: {kind} for {wid}"
        else:
            assert record["status"] == "ok", record
            assert record["attempts"] == server.seen[wid]
            assert server.applied[wid] == {"name": f"n-{wid}"}
    assert [server.seen[f"503x2-{i}"] for i in range(3)] == [3, 3, 3]
    for i in range(3):
        first, second = server.times[f"429-{i}"]
        assert second - first >= 0.99  # no retry before Retry-After (timers may round down)
    tally = summarise(ledger)
    assert (tally.by_status["ok"], tally.by_status["failed"]) == (15, 6)
    assert tally.attempts == sum(server.seen.values())
    assert tally.by_http_status[200] == server.by_status[200] == 15
    assert tally.by_http_status[404] == server.by_status[404] == 3
