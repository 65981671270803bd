from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ThreadedMock, bulkpatch_cli, fleet_csv, ledger_rows, spawn, write

from bulkpatch.errors import (
    ConfigError,
    InputError,
)
from bulkpatch.mock.store import sample_workloads
from bulkpatch.rows.reader import Format, InputFile, detect_format


def read(path: Path, fmt: str | None = None) -> list[tuple[int, int, object, str | None]]:
    with InputFile(str(path), fmt) as source:
        return [(r.row, r.line, r.fields, r.error) for r in source]


def test_csv_rows_carry_row_and_physical_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.csv",
        'workload_id,name\n1,alpha\n\n2,"two\nlines"\n3,gamma\n',
    )
    assert read(path) == [
        (1, 2, {"workload_id": "1", "name": "alpha"}, None),
        (2, 4, {"workload_id": "2", "name": "two\nlines"}, None),
        (3, 6, {"workload_id": "3", "name": "gamma"}, None),
    ]


def test_csv_bom_is_stripped_from_the_header(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", b"\xef\xbb\xbfworkload_id,name\r\n1,a\r\n")
    assert read(path) == [(1, 2, {"workload_id": "1", "name": "a"}, None)]


def test_csv_bad_records_become_row_errors_and_reading_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", b"workload_id,name\n1,a\n2\n3,\xff\xfe\n4,d\n")
    rows = read(path)
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert rows[1] == (2, 3, None, "expected 2 columns, found 1")
    assert rows[2] == (3, 4, None, "invalid UTF-8")
    assert rows[3][2] == {"workload_id": "4", "name": "d"}


def test_jsonl_skips_blank_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.jsonl",
        b'{"workload_id": "1"}\n\n   \n{"workload_id": \n[1, 2]\n"text"\n'
        b'{"name": "\xff"}\n{"workload_id": "2"}',
    )
    rows = read(path)
    assert rows[0] == (1, 1, {"workload_id": "1"}, None)
    assert rows[1][:2] == (2, 4) and rows[1][3] is not None and rows[1][3].startswith("invalid JSON")
    assert rows[2] == (3, 5, None, "expected a JSON object, got an array")
    assert rows[3] == (4, 6, None, "expected a JSON object, got a string")
    assert rows[4] == (5, 7, None, "invalid UTF-8")
    assert rows[5] == (6, 8, {"workload_id": "2"}, None)


def test_jsonl_bom_on_first_line(tmp_path: Path) -> None:
    path = write(tmp_path / "w.ndjson", b'\xef\xbb\xbf{"a": 1}\n')
    assert read(path) == [(1, 1, {"a": 1}, None)]


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "w.csv.gz"
    path.write_bytes(gzip.compress(b"workload_id,name\n1,a\n2,b\n"))
    assert [r[2] for r in read(path)] == [
        {"workload_id": "1", "name": "a"},
        {"workload_id": "2", "name": "b"},
    ]


def test_truncated_gzip_is_an_input_error_after_the_good_rows(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(b'{"workload_id": "%d"}\n' % i for i in range(2000)))
    path = write(tmp_path / "w.jsonl.gz", data[: len(data) // 2])
    seen: list[int] = []

    def read_all() -> None:
        with InputFile(str(path)) as source:
            seen.extend(record.row for record in source)

    with pytest.raises(InputError, match="unreadable after row"):
        read_all()
    assert seen and seen == list(range(1, len(seen) + 1))


def test_reader_is_lazy(tmp_path: Path) -> None:
    path = write(tmp_path / "w.jsonl", "".join(f'{{"i": {i}}}\n' for i in range(100_000)))
    with InputFile(str(path)) as source:
        first = next(iter(source))
        assert first.fields == {"i": 0}
        # Only the first buffer of a 1.1 MB file was read to produce the first record.
        assert source.bytes_read < 200_000


@pytest.mark.parametrize(
    ("name", "explicit", "expected"),
    [
        ("a.csv", None, Format.CSV),
        ("a.CSV.gz", None, Format.CSV),
        ("a.jsonl", None, Format.JSONL),
        ("a.ndjson.gz", None, Format.JSONL),
        ("a.txt", "csv", Format.CSV),
        ("-", "jsonl", Format.JSONL),
    ],
)
def test_detect_format(name: str, explicit: str | None, expected: Format) -> None:
    assert detect_format(name, explicit) is expected


@pytest.mark.parametrize(("name", "explicit"), [("a.txt", None), ("-", None), ("a.csv", "xml")])
def test_detect_format_refuses(name: str, explicit: str | None) -> None:
    with pytest.raises(ConfigError):
        detect_format(name, explicit)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"a,,b\n", "unnamed column"), (b"a,b,a\n", "names 'a' twice")],
)
def test_bad_csv_header_is_a_config_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = write(tmp_path / "w.csv", content)
    with pytest.raises(ConfigError, match=message):
        InputFile(str(path))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open input"):
        InputFile(str(tmp_path / "nope.csv"))


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO(b'{"a": 1}\n{"a": 2}\n'))
    monkeypatch.setattr(sys, "stdin", fake)
    with InputFile("-", "jsonl") as source:
        assert [r.fields for r in source] == [{"a": 1}, {"a": 2}]


def test_keep_raw_returns_the_record_as_written(tmp_path: Path) -> None:
    path = write(tmp_path / "w.csv", 'id,name\n1,"a, b"\n')
    with InputFile(str(path), keep_raw=True) as source:
        assert [r.raw for r in source] == ['1,"a, b"']


@pytest.mark.slow
def test_rows_from_a_pipe_are_all_read(tmp_path: Path, api: ThreadedMock) -> None:
    """Issue 9.1: `cat x.csv | bulkpatch run /dev/stdin` sent 262 of 3,000 rows, exit 0."""
    source = fleet_csv(tmp_path, 300, "piped")
    ledger = tmp_path / "x.jsonl"
    with open(source, "rb") as stdin:
        cat = subprocess.Popen(["cat"], stdin=stdin, stdout=subprocess.PIPE)
        done = bulkpatch_cli(
            "run",
            "/dev/stdin",
            "--format",
            "csv",
            "--ledger",
            str(ledger),
            "--base-url",
            api.url,
            stdin=cat.stdout,
        )
        cat.wait()
        assert cat.stdout is not None
        cat.stdout.close()
    assert done.returncode == 0, done.stderr
    assert len(ledger_rows(ledger)) == 300
    assert api.api.store.get(list(sample_workloads(300))[-1]["id"])["name"] == "piped-299"  # type: ignore[index]


@pytest.mark.slow
def test_rows_from_a_named_fifo_are_all_read(tmp_path: Path, api: ThreadedMock) -> None:
    source = fleet_csv(tmp_path, 120, "piped")
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    ledger = tmp_path / "x.jsonl"
    reader = spawn("run", str(fifo), "--format", "csv", "--ledger", str(ledger), "--base-url", api.url)
    with open(fifo, "wb") as f:  # blocks until the run opens the FIFO: once, not twice
        f.write(source.read_bytes())
    _, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert len(ledger_rows(ledger)) == 120
