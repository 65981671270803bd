"""The outage gate: many connection failures in a row make one probe at a time, then give up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import FakeClock, ledger_rows, run_on_fake_clock, run_options, write

from bulkpatch.engine.outage import OutageGate
from bulkpatch.engine.pacing import Pacer
from bulkpatch.engine.run import Run
from bulkpatch.engine.stopping import StopToken
from bulkpatch.errors import ApiUnreachable, TransportError
from bulkpatch.http.transport import Response
from bulkpatch.testing import MockTransport, SentRequest


def test_an_outage_is_a_run_of_failures_and_any_answer_ends_it() -> None:
    events: list[str] = []
    gate = OutageGate(threshold=3, clock=FakeClock(), on_change=lambda e, f: events.append(e))
    assert not gate.cannot_connect("refused") and not gate.cannot_connect("refused")
    gate.answered()  # an answer in between: the count starts again
    assert not gate.cannot_connect("refused") and not gate.cannot_connect("refused")
    assert gate.cannot_connect("refused") and gate.active
    gate.answered()
    assert not gate.active and events == ["outage_started", "outage_ended"]


@pytest.mark.parametrize("start", [1000.0, 1002.598653032093, 1_000_000_000.123])
async def test_probes_back_off_then_give_up_after_max_outage(start: float) -> None:
    """At any clock value: a sliver of time left once never ended (float precision), a livelock."""
    clock = FakeClock(start)
    gate = OutageGate(threshold=1, max_outage=60.0, clock=clock, sleep=clock.sleep)
    gate.cannot_connect("refused")

    async def probe_until_given_up() -> None:
        for _ in range(100):
            await gate.wait_before_probe()

    with pytest.raises(ApiUnreachable, match=r"API unreachable since .* \(refused\)"):
        await probe_until_given_up()
    assert clock.sleeps[:5] == [1.0, 2.0, 4.0, 8.0, 15.0]
    assert len(clock.sleeps) < 12 and gate.gave_up is not None


async def test_a_pause_cut_short_by_stop_does_not_spin() -> None:
    """A pause for everyone on the real clock, then a stop: acquire returns with a few sleeps."""
    sleeps: list[float] = []

    async def counting(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    token = StopToken(counting)
    pacer = Pacer(4, stop=token)
    pacer.hold(3600)
    token.stop()
    await asyncio.wait_for(pacer.acquire(), 5)
    assert len(sleeps) <= 1


async def test_an_api_down_for_a_while_fails_no_row(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(200)))
    clock = FakeClock()
    down = {"until": 0.0}
    calls = 0

    def handler(request: SentRequest) -> Response:
        nonlocal calls
        calls += 1
        if calls == 60:
            down["until"] = clock.now + 20.0  # the API goes away for 20 s (fake) mid-run
        if clock.now < down["until"]:
            raise TransportError("connect", "cannot connect: Connection refused")
        return Response(204, None, b"")

    events: list[str] = []
    r = Run(
        run_options(source, concurrency=8, max_attempts=3),
        transport=MockTransport(handler),
        sleep=clock.sleep,
        clock=clock,
        events=lambda e, f: events.append(e),
    )
    result = await r.execute()
    assert result.tally.by_status["ok"] == 200 and result.exit_code == 0
    assert "outage_started" in events and "outage_ended" in events


async def test_an_api_that_stays_down_stops_the_run_with_rows_unrecorded(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(100)))

    def handler(request: SentRequest) -> Response:
        raise TransportError("connect", "cannot connect: Connection refused")

    with pytest.raises(ApiUnreachable, match="API unreachable since"):
        await run_on_fake_clock(run_options(source, concurrency=8, max_outage=60), MockTransport(handler))
    failed = [r for r in ledger_rows(f"{source}.ledger.jsonl") if r["status"] == "failed"]
    assert failed == []
