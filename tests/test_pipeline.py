from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson
import pytest
from helpers import FakeClock, ok, write

from bulkpatch.engine.preview import dry_run
from bulkpatch.engine.run import Run
from bulkpatch.errors import AuthError, ConfigError, InputError, LedgerError
from bulkpatch.http.transport import Response
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import Status, iter_records
from bulkpatch.records.resume import LedgerIndex
from bulkpatch.testing import MockTransport, SentRequest

BASE = "http://api.test"


def csv_input(tmp_path: Path, rows: int, extra: str = "") -> Path:
    body = "".join(f"w{i},name-{i}\n" for i in range(1, rows + 1))
    return write(tmp_path / "in.csv", "workload_id,name\n" + body + extra)


def options(source: Path, **kw: object) -> RunOptions:
    return RunOptions(**{"input": str(source), "base_url": BASE, **kw})  # type: ignore[arg-type]


def row_records(path: Path) -> list[dict[str, object]]:
    return [r for r in iter_records(f"{path}.ledger.jsonl") if r["type"] == "row"]


async def run(opts: RunOptions, transport: MockTransport, **kw: object) -> object:
    return await Run(opts, transport=transport, sleep=FakeClock().sleep, **kw).execute()  # type: ignore[arg-type]


async def test_every_row_is_sent_once_and_recorded(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 500)
    transport = MockTransport(ok)
    result = await Run(options(path, concurrency=8), transport=transport).execute()
    assert result.exit_code == 0
    assert result.tally.by_status[Status.OK] == 500
    assert len(transport.requests) == 500
    assert sorted(c.url for c in transport.requests) == sorted(
        f"{BASE}/api/workload_management/v5/workloads/w{i}" for i in range(1, 501)
    )
    bodies = {orjson.loads(c.body or b"")["name"] for c in transport.requests}
    assert bodies == {f"name-{i}" for i in range(1, 501)}
    records = row_records(path)
    assert sorted(int(r["row"]) for r in records) == list(range(1, 501))  # type: ignore[call-overload]
    assert {r["status"] for r in records} == {"ok"}
    assert transport.max_in_flight <= 8


async def test_rerun_sends_nothing(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 50)
    await Run(options(path), transport=MockTransport(ok)).execute()
    again = MockTransport(ok)
    result = await Run(options(path), transport=again).execute()
    assert again.requests == []
    assert result.already_done == 50
    assert result.exit_code == 0


def flaky(request: SentRequest) -> Response:
    wid = request.url.rsplit("/", 1)[1]
    n = int(wid[1:])
    if n % 10 == 0:
        return Response(404, None, b'{"error": {"code": "NotFound", "message": "no such workload"}}')
    return Response(204, None, b"")


async def test_bad_rows_are_invalid_failed_rows_failed_and_the_run_goes_on(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 30, extra=",no id\nw99,a,extra\nw98,\n")
    transport = MockTransport(flaky)
    result = await run(options(path), transport)
    assert result.exit_code == 1  # type: ignore[attr-defined]
    by_row = {int(r["row"]): r for r in row_records(path)}  # type: ignore[call-overload]
    assert len(by_row) == 33
    assert by_row[10]["status"] == "failed" and by_row[10]["attempts"] == 1
    assert by_row[10]["error"] == "HTTP 404: NotFound: no such workload"
    assert (by_row[31]["status"], by_row[31]["line"], by_row[31]["error"]) == (
        "invalid",
        32,
        "missing workload_id",
    )
    assert by_row[32]["error"] == "expected 2 columns, found 3"
    assert (by_row[33]["status"], by_row[33]["error"]) == ("skipped", "no fields to update")
    assert Counter(r["status"] for r in by_row.values()) == {
        "ok": 27,
        "failed": 3,
        "invalid": 2,
        "skipped": 1,
    }
    assert len(transport.requests) == 30


async def test_retry_failed_resends_only_failed_rows(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 30, extra=",no id\n")
    await run(options(path), MockTransport(flaky))
    plain = MockTransport(ok)
    await run(options(path), plain)
    assert plain.requests == []
    retry = MockTransport(ok)
    result = await run(options(path, retry_failed=True), retry)
    assert sorted(c.url.rsplit("/", 1)[1] for c in retry.requests) == ["w10", "w20", "w30"]
    assert result.state[Status.FAILED] == 0  # type: ignore[attr-defined]
    assert result.exit_code == 1  # type: ignore[attr-defined]  # the invalid row still needs fixing


async def test_input_is_streamed_not_read_ahead(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 2000)
    lead: list[int] = []
    holder: list[Run] = []

    def handler(request: SentRequest) -> Response:
        r = holder[0]
        lead.append(r.status().rows_read - r.tally.total)
        return Response(204, None, b"")

    r = Run(options(path, concurrency=16), transport=MockTransport(handler))
    holder.append(r)
    await r.execute()
    # Rows read but not finished never exceed the rows in flight and one batch read ahead.
    from bulkpatch.engine.intake import BATCH

    assert max(lead) <= 16 + BATCH < 2000


async def test_stop_interrupts_and_a_rerun_finishes_the_job(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 400)
    holder: list[Run] = []
    sent = Counter[str]()

    def handler(request: SentRequest) -> Response:
        sent[request.url] += 1
        if sum(sent.values()) == 100:
            holder[0].stop()
        return Response(204, None, b"")

    first = Run(options(path, concurrency=8), transport=MockTransport(handler))
    holder.append(first)
    result = await first.execute()
    assert result.interrupted and result.exit_code == 130
    assert 100 <= result.tally.total <= 100 + 8
    second = await Run(options(path, concurrency=8), transport=MockTransport(handler)).execute()
    assert second.exit_code == 0
    assert len(sent) == 400 and max(sent.values()) == 1
    assert LedgerIndex.load(f"{path}.ledger.jsonl").counts()[Status.OK] == 400


async def test_stop_cuts_retry_waits_short_and_leaves_the_row_unrecorded(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 1)
    holder: list[Run] = []

    def handler(request: SentRequest) -> Response:
        asyncio.get_running_loop().call_soon(holder[0].stop)
        return Response(503, "120", b"")

    r = Run(options(path), transport=MockTransport(handler))
    holder.append(r)
    result = await asyncio.wait_for(r.execute(), 5)
    assert result.interrupted
    assert row_records(path) == []


async def test_a_ledger_vouches_only_for_the_requests_it_answered(tmp_path: Path) -> None:
    """The same rows against another --path or --base-url are other requests: all are sent."""
    path = csv_input(tmp_path, 5)
    await run(options(path), MockTransport(ok))
    moved = MockTransport(ok)
    result = await run(options(path, path="/other/{workload_id}"), moved)
    # Another path template is another target: the memory knows nothing of it (nothing "changed").
    assert len(moved.requests) == 5 and result.changed == 0 and result.already_done == 0
    elsewhere = MockTransport(ok)
    await run(options(path, base_url="https://staging.example"), elsewhere)
    assert len(elsewhere.requests) == 5
    same = MockTransport(ok)
    await run(options(path, base_url="https://staging.example"), same)
    assert same.requests == []


async def test_jsonl_template_field_missing_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"id": "1", "name": "x"}\n')
    transport = MockTransport(ok)
    with pytest.raises(ConfigError, match="no field 'workload_id'"):
        await run(options(path), transport)
    assert transport.requests == []


async def test_token_endpoint_failure_stops_before_any_row(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 5)

    def handler(request: SentRequest) -> Response:
        return Response(401 if request.url.endswith("/idp/token") else 204, None, b"")

    transport = MockTransport(handler)
    with pytest.raises(AuthError, match="refused the client credentials"):
        await run(options(path, client_id="id", client_secret="s3cr3t"), transport)
    assert [c.url for c in transport.requests] == [f"{BASE}/api/2/idp/token"]
    assert row_records(path) == []


def test_dry_run_sends_nothing_and_samples_requests(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 10, extra=",x\n")
    found = dry_run(RunOptions(input=str(path), dry_run=True), samples=3)
    assert found.tally.by_status[Status.OK] == 10 and found.tally.by_status[Status.INVALID] == 1
    assert [s[1] for s in found.samples] == [f"/api/workload_management/v5/workloads/w{i}" for i in (1, 2, 3)]
    assert not Path(f"{path}.ledger.jsonl").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_a_ledger_that_cannot_be_written_stops_the_run(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 20)
    transport = MockTransport(ok)
    with pytest.raises(LedgerError, match="No space left on device"):
        await run(options(path, ledger="/dev/full"), transport)
    assert transport.requests == []


async def test_a_truncated_input_records_what_it_read_then_fails(tmp_path: Path) -> None:
    import gzip

    data = gzip.compress("".join(f'{{"workload_id": "w{i}", "name": "n"}}\n' for i in range(5000)).encode())
    path = write(tmp_path / "in.jsonl.gz", data[: len(data) * 2 // 3])
    transport = MockTransport(ok)
    with pytest.raises(InputError, match="unreadable after row"):
        await run(options(path, concurrency=8), transport)
    recorded = row_records(path)
    # Every row read before the break was sent and recorded, none twice.
    assert len(recorded) == len(transport.requests) > 0
    assert len({r["row"] for r in recorded}) == len(recorded)


async def test_limit_makes_a_canary_run_and_the_next_run_goes_on(tmp_path: Path) -> None:
    path = csv_input(tmp_path, 100)
    canary = MockTransport(ok)
    first = await run(options(path, limit=10), canary)
    assert first.limited and first.exit_code == 0  # type: ignore[attr-defined]
    assert len(canary.requests) == 10
    rest = MockTransport(ok)
    second = await run(options(path), rest)
    assert not second.limited and second.already_done == 10  # type: ignore[attr-defined]
    assert len(rest.requests) == 90
    assert {c.url for c in canary.requests}.isdisjoint({c.url for c in rest.requests})


def test_open_file_limit_is_raised_or_the_run_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from bulkpatch.engine import assembly as wiring

    limits = {"soft": 256, "hard": 4096}
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: limits.update(soft=v[0]))
    wiring.ensure_open_files(1000)
    assert limits["soft"] == 1000
    with pytest.raises(ConfigError, match="limit is 4096"):
        wiring.ensure_open_files(5000)
