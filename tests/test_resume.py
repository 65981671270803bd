from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from helpers import write

from bulkpatch.errors import ConfigError
from bulkpatch.records.ledger import LedgerWriter, RowResult, Status
from bulkpatch.records.ledger_file import input_identity, open_ledger
from bulkpatch.records.resume import (
    LedgerIndex,
    RetryFailed,
    fingerprint,
    rejection_fingerprint,
    request_prefix,
)


def binding(input_path: Path, template: str = "/w/{id}") -> dict[str, object]:
    return {"input": input_identity(str(input_path)), "path_template": template, "method": "PATCH"}


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_fingerprint_tells_requests_apart() -> None:
    prefix = request_prefix("PATCH", "https://h/")
    assert prefix == request_prefix("patch", "https://h")
    fp = fingerprint(prefix, "/w/1", b'{"name":"a"}')
    assert fp == fingerprint(prefix, "/w/1", b'{"name":"a"}')
    others = {
        fingerprint(prefix, "/w/1", b'{"name":"b"}'),
        fingerprint(prefix, "/w/2", b'{"name":"a"}'),
        fingerprint(request_prefix("PUT", "https://h"), "/w/1", b'{"name":"a"}'),
        fingerprint(request_prefix("PATCH", "https://other"), "/w/1", b'{"name":"a"}'),
        rejection_fingerprint("invalid", "1", "missing name"),
    }
    assert fp not in others and len(others) == 5


def test_done_mask_follows_retry_failed() -> None:
    index = LedgerIndex()
    rows = [
        RowResult(1, 2, "a", Status.OK),
        RowResult(2, 3, "b", Status.FAILED, 404, 1, "HTTP 404"),
        RowResult(3, 4, "c", Status.INVALID),
        RowResult(4, 5, "d", Status.SKIPPED),
        RowResult(5, 6, "e", Status.FAILED, 503, 5, "HTTP 503 (gave up after 5 attempts)"),
        RowResult(6, 7, "f", Status.FAILED, None, 5, "timed out (gave up after 5 attempts)"),
        RowResult(7, 8, "g", Status.UNCHANGED),
    ]
    for result in rows:
        index.set(result)
    assert list(index.done_mask()[1:9]) == [1, 1, 1, 1, 1, 1, 1, 0]
    assert list(index.done_mask(RetryFailed.TRANSIENT)[1:9]) == [1, 1, 1, 1, 0, 0, 1, 0]
    assert list(index.done_mask(RetryFailed.ALL)[1:9]) == [1, 0, 1, 1, 0, 0, 1, 0]
    assert index.counts()[Status.FAILED] == 3 and index.get(5) is Status.FAILED


def test_index_grows_for_large_row_numbers() -> None:
    index = LedgerIndex()
    index.set(RowResult(1_000_000, 1, "k", Status.OK, fp=7))
    assert index.get(1_000_000) is Status.OK and index.fps[1_000_000] == 7
    assert index.get(999_999) is None


def test_garbled_row_records_are_skipped_and_cost_no_memory(tmp_path: Path) -> None:
    """Issue 9.4: a row of 10**12 took gigabytes (or MemoryError); odd field types crashed."""
    path = tmp_path / "l.jsonl"
    writer = LedgerWriter(path)
    writer.write(RowResult(1, 2, "a", Status.OK, 204, 1, None, 1.0, 5))
    writer.close()
    with open(path, "ab") as f:
        for bad in (
            {"type": "row", "row": 10**12, "status": "ok"},
            {"type": "row", "row": 999_999_999, "status": "ok"},
            {"type": "row", "row": 2, "status": "bogus"},
            {"type": "row", "row": 2},
            {"type": "row", "row": 2, "status": "ok", "attempts": "x"},
            {"type": "row", "row": 2, "status": "ok", "line": [1]},
            {"type": "row", "row": "2", "status": "ok"},
            {"type": "row", "row": -1, "status": "ok"},
            {"type": "row", "row": 2, "status": "ok", "http_status": "204"},
        ):
            f.write(orjson.dumps(bad) + b"\n")
    index = LedgerIndex.load(path)
    assert index.garbled == 9
    assert index.get(1) is Status.OK and index.get(2) is None
    assert len(index.codes) < 2_000_000


def test_a_new_ledger_gets_a_header_and_a_lock(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    ledger = tmp_path / "l.jsonl"
    first = open_ledger(str(ledger), binding(data))
    header = lines(ledger)[0]
    assert header["type"] == "header" and header["version"] == 2
    assert header["input"]["sha256"] == input_identity(str(data))["sha256"]  # type: ignore[index]
    with pytest.raises(ConfigError, match="in use by another bulkpatch run"):
        open_ledger(str(ledger), binding(data))
    first.close()
    open_ledger(str(ledger), binding(data)).close()  # released with the first run


def test_the_lock_names_the_process_holding_it(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    ledger = tmp_path / "l.jsonl"
    first = open_ledger(str(ledger), binding(data))
    first.writer.write_event("run", event="start", pid=4242)
    with pytest.raises(ConfigError, match=r"pid 4242, started \d\d:\d\d:\d\d UTC"):
        open_ledger(str(ledger), binding(data))
    first.close()


def test_same_input_resumes_and_a_copy_of_it_too(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    ledger = tmp_path / "l.jsonl"
    opened = open_ledger(str(ledger), binding(data))
    opened.writer.write(RowResult(1, 2, "1", Status.OK, fp=9))
    opened.close()
    copy = write(tmp_path / "copy.csv", data.read_bytes())
    again = open_ledger(str(ledger), binding(copy))
    assert again.archived is None and again.index.get(1) is Status.OK
    again.close()


def test_a_changed_input_keeps_the_old_ledger_under_a_dated_name(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    ledger = tmp_path / "in.csv.ledger.jsonl"
    opened = open_ledger(str(ledger), binding(data))
    opened.writer.write(RowResult(1, 2, "1", Status.OK, fp=9))
    opened.close()
    old = ledger.read_bytes()
    write(data, "id,name\n1,b\n")
    again = open_ledger(str(ledger), binding(data))
    assert again.archived is not None
    assert Path(again.archived).read_bytes() == old
    assert Path(again.archived).name.startswith("in.csv.ledger.2")
    assert Path(again.archived).name.endswith("Z.jsonl")
    assert again.index.get(1) is None
    again.close()
    assert [r["type"] for r in lines(ledger)] == ["header"]


def test_a_ledger_of_the_row_number_days_is_kept_aside(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    ledger = tmp_path / "l.jsonl"
    write(
        ledger, '{"type":"header","version":1,"input":{"path":"x"}}\n{"type":"row","row":1,"status":"ok"}\n'
    )
    opened = open_ledger(str(ledger), binding(data))
    assert opened.archived is not None and opened.index.get(1) is None
    opened.close()


@pytest.mark.parametrize(
    "content",
    ["id,name\n1,a\n", "precious notes\n", '{"type":"row","row":1,"status":"ok"}\n', "\x00\x01binary"],
)
def test_a_file_that_is_no_ledger_is_never_appended_to(tmp_path: Path, content: str) -> None:
    """Issue 9.3: --ledger pointing at the input or at any other file appended JSON to it."""
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    other = write(tmp_path / "precious.txt", content)
    link = tmp_path / "link.jsonl"
    link.symlink_to(other)
    for target in (other, link):
        with pytest.raises(ConfigError, match="not a bulkpatch ledger"):
            open_ledger(str(target), binding(data))
    assert other.read_text() == content


def test_the_input_itself_is_refused_as_its_ledger(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    with pytest.raises(ConfigError, match="is the input itself"):
        open_ledger(str(data), binding(data), input_name=str(data))
    assert data.read_text() == "id,name\n1,a\n"


def test_an_empty_file_becomes_a_ledger(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    ledger = write(tmp_path / "l.jsonl", "")
    open_ledger(str(ledger), binding(data)).close()
    assert lines(ledger)[0]["type"] == "header"


def test_devices_are_written_but_never_read_or_locked(tmp_path: Path) -> None:
    data = write(tmp_path / "in.csv", "id,name\n1,a\n")
    first = open_ledger(os.devnull, binding(data))
    second = open_ledger(os.devnull, binding(data))  # not refused as "in use": never locked
    assert len(first.index.codes) == len(second.index.codes) == 0  # nothing was read back
    assert first.archived is None and second.archived is None
    first.writer.write(RowResult(1, 2, "1", Status.OK, 204, 1, None, 0.0))
    first.close()  # the record goes to the device without an error
    second.close()
    assert first.writer.error is None


def test_a_pipe_input_is_not_read_for_its_identity(tmp_path: Path) -> None:
    """Issue 9.1: hashing the input reopened a pipe and took its first MiB away from the run."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    assert input_identity(str(fifo)) == {"path": str(fifo)}  # returns at once: never opened
    read, write_end = os.pipe()
    try:
        os.write(write_end, b"id,name\n1,a\n")
        assert input_identity(f"/dev/fd/{read}") == {"path": f"/dev/fd/{read}"}
        assert os.read(read, 100) == b"id,name\n1,a\n"
    finally:
        os.close(read)
        os.close(write_end)


def test_the_index_costs_nine_bytes_a_row() -> None:
    """The fingerprint column grew by 8 entries per byte asked (8 x 8 bytes a row): 17 MB at 200k rows."""
    index = LedgerIndex()
    for row in range(1, 200_001):
        index.set(RowResult(row, row, "k", Status.OK, fp=row))
    assert len(index.fps) == len(index.codes) < 400_000
    assert index.fps[200_000] == 200_000
