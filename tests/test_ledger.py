from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import orjson
import pytest
from helpers import (
    API,
    NamesApi,
    write,
)

from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import LedgerWriter, RowResult, Status
from bulkpatch.records.resume import LedgerIndex
from bulkpatch.testing import MockTransport


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_row_record_has_the_contract_fields(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "l.jsonl")
    before = time.time()
    writer.write(RowResult(1, 2, "k", Status.FAILED, 404, 1, "HTTP 404", 3.5, 0xABC))
    after = time.time()
    writer.close()
    (record,) = lines(tmp_path / "l.jsonl")
    ts = record.pop("ts")
    assert record == {
        "type": "row", "row": 1, "line": 2, "key": "k", "status": "failed",
        "http_status": 404, "attempts": 1, "error": "HTTP 404", "ms": 3.5, "fp": "0000000000000abc",
    }  # fmt: skip
    # The time of the outcome, to the millisecond: what the report's charts are drawn from.
    assert isinstance(ts, float) and round(before, 3) <= ts <= round(after, 3)
    assert ts == round(ts, 3)
    record["ts"] = ts
    assert RowResult.from_json(record) == RowResult(
        1, 2, "k", Status.FAILED, 404, 1, "HTTP 404", 3.5, 0xABC, ts
    )


def test_a_row_keeps_the_time_it_was_given(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "l.jsonl")
    writer.write(RowResult(1, 2, "k", Status.OK, ts=1_700_000_000.5))
    writer.close()
    assert lines(tmp_path / "l.jsonl")[0]["ts"] == 1_700_000_000.5


@pytest.mark.parametrize("ts", [None, "noon", -1, True, [1]])
def test_a_record_without_a_readable_time_still_counts(ts: object) -> None:
    # Ledgers written before ``ts`` existed, or a hand-edited one: the row counts, untimed.
    record = {"type": "row", "row": 1, "line": 2, "key": "k", "status": "ok", "ms": 3.0}
    if ts is not None:
        record["ts"] = ts
    result = RowResult.from_json(record)
    assert result is not None and result.ts is None and result.status is Status.OK


def test_latest_record_wins(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "l.jsonl")
    writer.write(RowResult(1, 2, "a", Status.FAILED))
    writer.write(RowResult(2, 3, "b", Status.OK))
    writer.write(RowResult(1, 2, "a", Status.OK))
    writer.close()
    index = LedgerIndex.load(tmp_path / "l.jsonl")
    assert index.get(1) is Status.OK and index.get(2) is Status.OK and index.get(3) is None
    assert index.counts()[Status.OK] == 2


def test_torn_last_line_is_skipped_and_fenced_off(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    writer = LedgerWriter(path)
    writer.write(RowResult(1, 2, "a", Status.OK))
    writer.close()
    with open(path, "ab") as f:
        f.write(b'{"type": "row", "row": 2, "sta')  # a crash mid-write
    index = LedgerIndex.load(path)
    assert index.get(1) is Status.OK and index.get(2) is None
    writer = LedgerWriter(path)
    writer.write(RowResult(2, 3, "b", Status.OK))
    writer.close()
    assert LedgerIndex.load(path).get(2) is Status.OK
    assert orjson.loads(path.read_bytes().splitlines()[-1])["row"] == 2


async def test_records_reach_the_file_within_one_loop_turn(tmp_path: Path) -> None:

    path = tmp_path / "l.jsonl"
    writer = LedgerWriter(path)
    writer.write(RowResult(1, 2, "a", Status.OK))
    assert path.read_bytes() == b""  # buffered...
    await asyncio.sleep(0)
    assert len(lines(path)) == 1  # ...and handed to the OS on the next turn, no close needed
    writer.close()


def test_a_failed_write_is_reported_once_and_later_writes_refused(tmp_path: Path) -> None:
    import os

    path = tmp_path / "l.jsonl"
    writer = LedgerWriter(path)
    errors: list[Exception] = []
    writer.on_error = errors.append
    writer.write(RowResult(1, 2, "a", Status.OK))
    # The disk "fills up": the ledger's descriptor now refuses writes.
    read_only = os.open(path, os.O_RDONLY)
    os.dup2(read_only, writer._fd)
    os.close(read_only)
    writer.write(RowResult(2, 3, "b", Status.OK))
    writer.write(RowResult(3, 4, "c", Status.OK))
    assert len(errors) == 1 and "cannot write ledger" in str(errors[0])
    assert writer.error is errors[0]
    writer.close()
    assert [r["row"] for r in lines(path)] == [1]


def test_a_new_ledger_is_private_to_its_owner(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "l.jsonl")
    writer.close()
    assert (tmp_path / "l.jsonl").stat().st_mode & 0o777 == 0o600


async def test_another_inputs_ledger_is_not_rotated_away(tmp_path: Path) -> None:
    first = write(tmp_path / "a.csv", "workload_id,name\nw1,a\nw2,b\n")
    other = write(tmp_path / "b.csv", "workload_id,name\nx1,a\n")
    api = NamesApi()
    await Run(RunOptions(input=str(first), base_url=API), transport=MockTransport(api)).execute()
    typo = RunOptions(input=str(other), base_url=API, ledger=f"{first}.ledger.jsonl")
    with contextlib.suppress(ConfigError):  # refusing it is what a careful user expects
        await Run(typo, transport=MockTransport(api)).execute()
    sent = len(api.sent)
    await Run(RunOptions(input=str(first), base_url=API), transport=MockTransport(api)).execute()
    assert api.sent[sent:] == []  # today: w1 and w2 are sent again
