"""Stopping is a token that waits watch, the same with a real or an injected sleep."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from helpers import (
    ThreadedMock,
    fleet_csv,
    ledger_rows,
    spawn,
    write,
)

from bulkpatch.engine.run import Run
from bulkpatch.engine.stopping import StopToken
from bulkpatch.http.transport import Response
from bulkpatch.mock import MockConfig
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import iter_records
from bulkpatch.testing import MockTransport, SentRequest


async def test_a_sleep_is_cut_short_by_stop_whatever_sleep_was_injected() -> None:
    never = asyncio.Event()

    async def endless(seconds: float) -> None:  # a fake clock that would never return
        await never.wait()

    token = StopToken(endless)
    sleeping = asyncio.ensure_future(token.sleep(3600))
    await asyncio.sleep(0)
    assert not sleeping.done()
    token.stop()
    await sleeping
    assert token.stopped
    await token.sleep(10)  # once stopped, sleeping returns at once
    await token.wait()


async def test_stopping_during_a_retry_after_pause_leaves_the_row_unrecorded(tmp_path: Path) -> None:
    """With an injected sleep too (issue 10), and the request already sent is counted (issue 9.11)."""
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    never = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        await never.wait()

    holder: list[Run] = []

    def handler(request: SentRequest) -> Response:
        asyncio.get_running_loop().call_soon(holder[0].stop)
        return Response(503, "120", b"")

    run = Run(
        RunOptions(input=str(source), base_url="http://api.test"),
        transport=MockTransport(handler),
        sleep=fake_sleep,
    )
    holder.append(run)
    result = await asyncio.wait_for(run.execute(), 30)
    assert result.interrupted and result.exit_code == 130
    assert result.requests == 1  # it was sent, even though the row has no outcome
    assert [r for r in iter_records(f"{source}.ledger.jsonl") if r["type"] == "row"] == []


def test_the_sent_key_set_is_exact_through_growth() -> None:
    from bulkpatch.engine.key_order import SentKeys

    sent = SentKeys()
    keys = [f"w-{i}" for i in range(5000)]  # grows from 1,024 slots several times
    for key in keys:
        sent.add(key)
    sent.add("w-7")
    sent.add("w-7")
    sent.add("w-4999")
    assert all(key in sent for key in keys) and "w-5000" not in sent and "" not in sent
    assert sent.repeated == 2


@pytest.mark.slow
def test_sighup_ends_the_run_like_sigterm(tmp_path: Path) -> None:
    """Issue 9.11: SIGHUP killed the run with no summary and no end record."""
    source = fleet_csv(tmp_path, 300, "piped")
    with ThreadedMock(MockConfig(require_auth=False, workloads=300, latency_ms=50)) as slow:
        proc = spawn("run", str(source), "--base-url", slow.url, "--concurrency", "2")
        ledger = Path(f"{source}.ledger.jsonl")
        deadline = time.monotonic() + 60
        while not (ledger.exists() and ledger_rows(ledger)):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"bulkpatch run interrupted" in out
    assert [r["event"] for r in iter_records(ledger) if r["type"] == "run"][-1] == "interrupted"


def test_the_sent_key_set_reuses_a_lookup_only_for_the_same_key() -> None:
    from bulkpatch.engine.key_order import SentKeys

    sent = SentKeys()
    for i in range(3000):  # the intake's pattern: ask, then add (growing the table on the way)
        key = f"w-{i}"
        assert key not in sent
        sent.add(key)
    assert "w-1" in sent
    sent.add("w-2999x")  # another key than the one just asked about: its own slot
    assert "w-2999x" in sent and "w-1" in sent and sent.repeated == 0
    assert "w-5" in sent
    sent.add("w-5")
    assert sent.repeated == 1
