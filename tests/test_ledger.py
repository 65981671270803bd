from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fakes import write

from bulkpatch.errors import LedgerMismatch
from bulkpatch.ledger import LedgerIndex, LedgerWriter, RowResult, Status, input_identity, open_ledger


def binding(input_path: Path, template: str = "/w/{id}") -> dict[str, object]:
    return {"input": input_identity(str(input_path)), "path_template": template, "method": "PATCH"}


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_row_record_has_the_contract_fields(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "l.jsonl")
    writer.write(RowResult(1, 2, "k", Status.FAILED, 404, 1, "HTTP 404", 3.5))
    writer.close()
    (record,) = lines(tmp_path / "l.jsonl")
    assert record == {
        "type": "row", "row": 1, "line": 2, "key": "k", "status": "failed",
        "http_status": 404, "attempts": 1, "error": "HTTP 404", "ms": 3.5,
    }  # fmt: skip


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


def test_done_rows_respects_retry_failed(tmp_path: Path) -> None:
    index = LedgerIndex()
    for row, status in [(1, Status.OK), (2, Status.FAILED), (3, Status.INVALID), (4, Status.SKIPPED)]:
        index.set(row, status)
    assert list(index.done_rows(retry_failed=False)[1:6]) == [1, 1, 1, 1, 0]
    assert list(index.done_rows(retry_failed=True)[1:6]) == [1, 0, 1, 1, 0]


def test_index_grows_for_large_row_numbers() -> None:
    index = LedgerIndex()
    index.set(1_000_000, Status.OK)
    assert index.get(1_000_000) is Status.OK
    assert index.get(999_999) is None


def test_header_binds_the_ledger_to_input_and_template(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    ledger = tmp_path / "l.jsonl"
    writer, _ = open_ledger(ledger, binding(data))
    writer.close()
    assert lines(ledger)[0]["type"] == "header"
    # Same input, same template: accepted.
    open_ledger(ledger, binding(data))[0].close()
    with pytest.raises(LedgerMismatch, match="--path"):
        open_ledger(ledger, binding(data, "/other/{id}"))
    other = write(tmp_path / "other.csv", "id,name\n2,b\n")
    with pytest.raises(LedgerMismatch, match="another input"):
        open_ledger(ledger, binding(other))


def test_a_copied_input_still_resumes(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    ledger = tmp_path / "l.jsonl"
    open_ledger(ledger, binding(data))[0].close()
    copy = write(tmp_path / "copy.csv", data.read_bytes())
    open_ledger(ledger, binding(copy))[0].close()


async def test_records_reach_the_file_within_one_loop_turn(tmp_path: Path) -> None:
    import asyncio

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
