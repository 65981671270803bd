"""The workers (engine/workers.py): what a kill -9 can find at any moment."""

from __future__ import annotations

from pathlib import Path

from helpers import write

from bulkpatch.engine.run import Run
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import iter_records
from bulkpatch.testing import MockTransport, Response, SentRequest


async def test_a_row_answered_is_in_the_ledger_file_before_the_next_request_goes_out(tmp_path: Path) -> None:
    """So a kill -9 finds each worker's last row in flight or written down: a resume sends at
    most ``concurrency`` rows again. (Records were handed to the OS at the end of the event-loop
    turn, after the worker had already sent its next request: up to twice as many.)"""
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},n\n" for i in range(1, 21)))
    ledger = tmp_path / "in.csv.ledger.jsonl"
    missing: list[str] = []

    def handler(request: SentRequest) -> Response:
        number = int(request.url.rsplit("w", 1)[1])
        written = {r["key"] for r in iter_records(ledger) if r.get("type") == "row"}
        missing.extend(f"w{n}" for n in range(1, number) if f"w{n}" not in written)
        return Response(204)

    options = RunOptions(input=str(source), base_url="http://api.test", concurrency=1)
    assert (await Run(options, transport=MockTransport(handler)).execute()).exit_code == 0
    assert missing == []


async def test_a_worker_flushes_what_was_recorded_before_each_send() -> None:
    """The rule itself, at the workers: an answer recorded (buffered) reaches the ledger file
    before any worker sends its next request, whatever the transport does without yielding."""
    import asyncio

    from bulkpatch.engine.stopping import StopToken
    from bulkpatch.engine.workers import Workers
    from bulkpatch.records.ledger import RowResult, Status
    from bulkpatch.rows.mapping import Request

    recorded: list[int] = []
    flushed: list[int] = []
    late: list[int] = []

    class Sender:
        async def send(self, request: Request) -> RowResult:
            late.extend(r for r in recorded if r not in flushed)
            return RowResult(request.row, request.row + 1, request.key, Status.OK, 204, 1)

    work = iter([Request(i, i + 1, f"w{i}", f"/w/{i}", b"{}") for i in range(1, 50)])
    workers = Workers(StopToken(asyncio.sleep), lambda e: None, lambda e, f: None)
    await workers.drive(
        work,
        asyncio.sleep,  # type: ignore[arg-type]
        Sender(),  # type: ignore[arg-type]
        lambda r: recorded.append(r.row),
        concurrency=4,
        grace=1.0,
        flush=lambda: flushed.extend(r for r in recorded if r not in flushed),
    )
    assert len(recorded) == 49 and late == []
