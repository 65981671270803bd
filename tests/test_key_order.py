"""Rows of one key land in input order (engine/key_order.py), whatever the retries, stops and
states; rows without a key go side by side."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from pathlib import Path

import orjson
from helpers import (
    API,
    NamesApi,
    no_wait,
    run_on_fake_clock,
    run_options,
    write,
)

from bulkpatch.engine.run import Run
from bulkpatch.options import RunOptions
from bulkpatch.records.resume import RetryFailed
from bulkpatch.testing import MockTransport, Response, SentRequest


async def test_a_retried_row_never_lands_after_a_later_row_of_its_key(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,OLD\nw1,NEW\nw2,X\n")
    applied: dict[str, str] = {}
    seen_old = 0

    def handler(request: SentRequest) -> Response:
        nonlocal seen_old
        name = orjson.loads(request.body or b"{}")["name"]
        if name == "OLD" and seen_old == 0:
            seen_old += 1
            return Response(503, None, b"")  # the first request is retried...
        applied[request.url.rsplit("/", 1)[1]] = name
        return Response(204, None, b"")

    result = await run_on_fake_clock(run_options(source, concurrency=8), MockTransport(handler))
    assert applied == {"w1": "NEW", "w2": "X"}  # ...and still lands before NEW
    assert result.repeated_keys == 1 and result.exit_code == 0


async def test_duplicate_keys_end_with_the_last_value_under_random_latency(tmp_path: Path) -> None:
    pairs = 50
    source = write(
        tmp_path / "in.csv",
        "workload_id,name\n"
        + "".join(f"w{i},OLD\n" for i in range(pairs))
        + "".join(f"w{i},NEW\n" for i in range(pairs)),
    )
    applied: dict[str, str] = {}
    rng = random.Random(5)

    async def slow(request: SentRequest) -> Response:
        for _ in range(rng.randrange(0, 50)):  # 0-50 loop turns: answers overtake each other
            await asyncio.sleep(0)
        applied[request.url.rsplit("/", 1)[1]] = orjson.loads(request.body or b"{}")["name"]
        return Response(204, None, b"")

    result = await run_on_fake_clock(run_options(source, concurrency=32), MockTransport(slow))
    assert set(applied.values()) == {"NEW"} and len(applied) == pairs
    assert result.repeated_keys == pairs


async def test_a_stop_during_an_earlier_rows_backoff_keeps_the_later_row_of_its_key_back(
    tmp_path: Path,
) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,OLD\nw1,NEW\n")
    never = asyncio.Event()

    async def endless(seconds: float) -> None:
        await never.wait()

    runs: list[Run] = []
    api = NamesApi()
    first = True

    def handler(request: SentRequest) -> Response:
        nonlocal first
        if first:  # row 1 gets a 503 with a long Retry-After, and the user presses Ctrl-C
            first = False
            api.sent.append("OLD")
            asyncio.get_running_loop().call_soon(runs[-1].stop)
            return Response(503, "120", b"")
        return api(request)

    options = RunOptions(input=str(source), base_url=API, concurrency=2)
    runs.append(Run(options, transport=MockTransport(handler), sleep=endless))
    interrupted = await asyncio.wait_for(runs[-1].execute(), 30)
    assert interrupted.exit_code == 130
    runs.append(Run(options, transport=MockTransport(handler)))
    resumed = await runs[-1].execute()
    assert resumed.exit_code == 0
    assert api.names == {"w1": "NEW"}, api.sent  # today: OLD (sent OLD, NEW after the stop, OLD)


async def test_retry_failed_does_not_let_a_superseded_row_land_last(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,OLD\nw1,NEW\n")
    api = NamesApi(refuse={"OLD": 500})
    options = RunOptions(input=str(source), base_url=API, max_attempts=2)
    first = await Run(options, transport=MockTransport(api), sleep=no_wait).execute()
    assert first.exit_code == 1 and api.names == {"w1": "NEW"}
    api.refuse.clear()  # the API is healthy again: the user resends the transient failures
    again = RunOptions(input=str(source), base_url=API, retry_failed=RetryFailed.TRANSIENT)
    await Run(again, transport=MockTransport(api), sleep=no_wait).execute()
    assert api.names == {"w1": "NEW"}, api.sent  # today: OLD


async def test_a_changed_earlier_row_of_a_repeated_key_is_followed_by_the_later_one(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,A\nw1,B\n")
    api = NamesApi()
    await Run(RunOptions(input=str(source), base_url=API), transport=MockTransport(api)).execute()
    assert api.names == {"w1": "B"}
    write(source, "workload_id,name\nw1,C\nw1,B\n")  # the input's last word on w1 is still B
    result = await Run(RunOptions(input=str(source), base_url=API), transport=MockTransport(api)).execute()
    assert result.exit_code == 0
    assert api.names == {"w1": "B"}, api.sent  # today: C (B was carried over from the old ledger)


async def test_sync_state_does_not_trust_a_key_whose_later_request_was_in_flight(tmp_path: Path) -> None:
    state = str(tmp_path / "sync.db")
    applied: dict[str, str] = {}
    sent: list[str] = []

    class Hangs:
        """Applies every request; for the names in ``hang`` the answer never comes."""

        def __init__(self, hang: set[str]) -> None:
            self.hang = hang

        async def send(
            self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None = None
        ) -> Response:
            name = orjson.loads(body or b"{}")["name"]
            sent.append(name)
            applied[url.rsplit("/", 1)[1]] = name
            if name in self.hang:
                await asyncio.Event().wait()
            return Response(204, None, b"")

        async def close(self) -> None:
            return None

    night1 = write(tmp_path / "night1.csv", "workload_id,name\nw1,A\n")
    await Run(RunOptions(input=str(night1), base_url=API, state=state), transport=Hangs(set())).execute()
    night2 = write(tmp_path / "night2.csv", "workload_id,name\nw1,B\n")
    run = Run(RunOptions(input=str(night2), base_url=API, state=state, grace=0), transport=Hangs({"B"}))
    task = asyncio.ensure_future(run.execute())
    for _ in range(1000):
        if run.in_flight:
            break
        await asyncio.sleep(0)
    run.stop()  # Ctrl-C (or kill -9) while B is in flight: B reached the API, its answer did not
    assert (await task).exit_code == 130
    night3 = write(tmp_path / "night3.csv", "workload_id,name\nw1,A\n")
    await Run(RunOptions(input=str(night3), base_url=API, state=state), transport=Hangs(set())).execute()
    assert applied == {"w1": "A"}, sent  # today: B stays, A is recorded "unchanged"


async def test_rows_without_a_key_are_sent_side_by_side(tmp_path: Path) -> None:
    """POSTs to a collection (no {field} in the path) were sent one at a time, all keyed ''."""
    source = write(tmp_path / "p.csv", "name\n" + "".join(f"n{i}\n" for i in range(40)))
    transport = MockTransport(lambda _: Response(201))
    opts = RunOptions(input=str(source), base_url=API, method="POST", path="/things", schema="any")  # type: ignore[arg-type]
    result = await Run(opts, transport=transport).execute()
    assert transport.max_in_flight > 1 and result.repeated_keys == 0 and result.exit_code == 0
