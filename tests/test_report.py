from __future__ import annotations

import csv
import os
import stat
import tracemalloc
from pathlib import Path

import orjson
import pytest
from helpers import API, NamesApi, write

from bulkpatch.defaults import DEFAULT_PATH
from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError
from bulkpatch.options import RunOptions
from bulkpatch.records.chain import parse_row
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.report import exit_status, summarise, write_failed
from bulkpatch.rows.mapping import Mapper, PathTemplate, Request
from bulkpatch.rows.reader import Format, InputFile
from bulkpatch.testing import MockTransport


def ledger_for(source: Path, *results: RowResult | bytes, name: str | None = None) -> Path:
    """A ledger of ``source`` holding ``results`` (bytes are written as they are)."""
    path = source.with_name(name or source.name + ".ledger.jsonl")
    fmt = "csv" if source.suffix == ".csv" else "jsonl"
    lines = [orjson.dumps({"type": "header", "version": 1, "input": {"path": str(source)}, "format": fmt})]
    lines += [r if isinstance(r, bytes) else r.to_json() for r in results]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def ok(row: int, key: str) -> RowResult:
    return RowResult(row, row + 1, key, Status.OK, 204, 1, None, 3.0)


def failed(row: int, key: str, http: int = 404) -> RowResult:
    return RowResult(
        row, row + 1, key, Status.FAILED, http, 1, f"HTTP {http}: NotFound: workload {key} not found"
    )


def csv_input(tmp_path: Path, name: str, rows: list[str], header: str = "workload_id,name") -> Path:
    return write(tmp_path / name, header + "\n" + "".join(row + "\n" for row in rows))


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_within_a_ledger_the_latest_record_of_each_row_wins(tmp_path: Path) -> None:
    source = csv_input(tmp_path, "a.csv", ["w1,a", "w2,b"])
    ledger = ledger_for(source, failed(1, "w1", 503), ok(2, "w2"), ok(1, "w1"))
    tally = summarise(ledger)
    assert (tally.total, tally.by_status[Status.OK], tally.bad) == (2, 2, 0)
    assert tally.attempts == 2


def test_over_several_ledgers_the_latest_outcome_of_each_key_wins(tmp_path: Path) -> None:
    first = ledger_for(
        csv_input(tmp_path, "a.csv", ["w1,a", "w2,b", "w3,c", ",d"]),
        ok(1, "w1"),
        failed(2, "w2"),
        failed(3, "w3"),
        RowResult(4, 5, "", Status.INVALID, None, 0, "missing workload_id"),
    )
    fix = ledger_for(
        csv_input(tmp_path, "fix.csv", ["w2,b2", "w3,c2", ",d"]),
        ok(1, "w2"),
        failed(2, "w3", 503),
        RowResult(3, 4, "", Status.INVALID, None, 0, "missing workload_id"),
    )
    assert exit_status(summarise(first)) == 1
    tally = summarise(first, fix)
    # w1 ok (first run), w2 ok and w3 failed (the fix run); each keyless row counts on its own.
    assert (tally.by_status[Status.OK], tally.by_status[Status.FAILED], tally.by_status[Status.INVALID]) == (
        2,
        1,
        2,
    )
    assert tally.by_http_status == {204: 2, 503: 1}
    assert exit_status(tally) == 1
    assert summarise(first, first).total == 4  # one ledger given twice counts once


def test_the_fix_up_chain_ends_with_nothing_outstanding(tmp_path: Path) -> None:
    first = ledger_for(csv_input(tmp_path, "a.csv", ["w1,a", "w2,b"]), ok(1, "w1"), failed(2, "w2"))
    fix = ledger_for(csv_input(tmp_path, "fix.csv", ["w2,b2"]), ok(1, "w2"))
    tally = summarise(first, fix)
    assert (tally.total, tally.bad, exit_status(tally)) == (2, 0, 0)


HOSTILE = [
    b'{"type":"row","row":1000000000000,"line":2,"key":"w9","status":"ok"}',
    b'{"type":"row","row":1,"key":"w1","status":"bogus"}',
    b'{"type":"row","row":1,"key":"w1"}',
    b'{"type":"row","row":1,"key":"w1","status":"ok","attempts":"x"}',
    b'{"type":"row","row":1,"key":"w1","status":"ok","line":[1]}',
    b'{"type":"row","row":1,"key":"w1","status":"ok","http_status":"404"}',
    b'{"type":"row","row":1,"key":"w1","status":"ok","http_status":true}',
    b'{"type":"row","row":true,"key":"w1","status":"ok"}',
    b'{"type":"row","row":-3,"key":"w1","status":"ok"}',
    b'{"type":"row","row":"1","key":"w1","status":"ok"}',
    b'{"type":"row","row":1,"key":7,"status":"ok"}',
    b'{"type":"row","row":1,"key":"w1","status":"ok","error":{"x":1}}',
    b'{"type":"row","row":1,"key":"w1","status":"ok","ms":"fast"}',
    b'{"type":"row","row":1,"key":"w1","status":"ok","ms":-1}',
    b'{"type":"row","row":1,"key":"w1","status":"ok","attempts":-1}',
    b'["row"]',
    b'{"type":"row","row":1,"key":"w1","sta',
]


def test_garbled_records_are_skipped_like_torn_lines_in_bounded_memory(tmp_path: Path) -> None:
    source = csv_input(tmp_path, "a.csv", ["w1,a"])
    ledger = ledger_for(source, failed(1, "w1"), *HOSTILE)
    tracemalloc.start()
    try:
        tally = summarise(ledger)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The huge row number is a well-formed record: it counts, and costs no 4 TB table.
    assert (tally.total, tally.by_status[Status.FAILED], tally.by_status[Status.OK]) == (2, 1, 1)
    assert peak < 5 * 2**20
    assert write_failed(ledger, str(tmp_path / "fix.csv")) == 1


@pytest.mark.parametrize("line", HOSTILE[1:-2])
def test_parse_row_refuses_what_the_writer_never_writes(line: bytes) -> None:
    assert parse_row(orjson.loads(line)) is None


def test_parse_row_reads_what_the_writer_writes() -> None:
    result = RowResult(3, 4, "w1", Status.FAILED, 503, 5, "HTTP 503", 12.5)
    assert parse_row(orjson.loads(result.to_json())) == result
    assert parse_row({"type": "row", "row": 2, "status": "ok"}) == RowResult(2, 0, "", Status.OK)


def test_a_huge_row_number_after_the_real_ones_still_wins_its_row(tmp_path: Path) -> None:
    big = 10**12
    ledger = ledger_for(
        csv_input(tmp_path, "a.csv", ["w1,a"]), failed(big, "x"), failed(1, "w1"), ok(big, "x")
    )
    assert summarise(ledger).by_status == {Status.OK: 1, Status.FAILED: 1}


def test_failed_out_csv_adds_why_and_run_ignores_it(tmp_path: Path) -> None:
    source = csv_input(tmp_path, "a.csv", ["w1,a", "w2,b", "w3,c"])
    ledger = ledger_for(
        source, ok(1, "w1"), failed(2, "w2"), RowResult(3, 4, "w3", Status.INVALID, None, 0, "bad")
    )
    out = tmp_path / "fix.csv"
    assert write_failed(ledger, str(out)) == 2
    assert read_csv(out) == [
        ["workload_id", "name", "_status", "_http_status", "_error", "_row"],
        ["w2", "b", "failed", "404", "HTTP 404: NotFound: workload w2 not found", "2"],
        ["w3", "c", "invalid", "", "bad", "3"],
    ]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with InputFile(str(out)) as fixed:
        mapper = Mapper(PathTemplate(DEFAULT_PATH), fmt=Format.CSV, header=fixed.header)
        bodies = [mapper.map(record) for record in fixed]
    assert [m.body for m in bodies if isinstance(m, Request)] == [b'{"name":"b"}', b'{"name":"c"}']


def test_failed_out_of_a_fix_file_replaces_its_annotations(tmp_path: Path) -> None:
    header = "workload_id,name,_status,_http_status,_error,_row"
    fix = csv_input(tmp_path, "fix.csv", ["w2,b2,failed,404,old,2"], header=header)
    ledger = ledger_for(fix, failed(1, "w2", 503))
    out = tmp_path / "fix-2.csv"
    assert write_failed(ledger, str(out)) == 1
    assert read_csv(out)[0] == header.split(",")
    assert read_csv(out)[1][2:] == ["failed", "503", "HTTP 503: NotFound: workload w2 not found", "1"]


def test_failed_out_over_two_ledgers_writes_what_is_still_outstanding(tmp_path: Path) -> None:
    first = ledger_for(
        csv_input(tmp_path, "a.csv", ["w1,a", "w2,b", "w3,c"]), ok(1, "w1"), failed(2, "w2"), failed(3, "w3")
    )
    fix = ledger_for(csv_input(tmp_path, "fix.csv", ["w2,b2", "w4,d"]), ok(1, "w2"), failed(2, "w4"))
    out = tmp_path / "fix-2.csv"
    assert write_failed([first, fix], str(out)) == 2
    assert [row[:2] for row in read_csv(out)[1:]] == [["w3", "c"], ["w4", "d"]]


def test_failed_out_jsonl_adds_an_object_and_keeps_the_rows_spelling(tmp_path: Path) -> None:
    source = write(
        tmp_path / "a.jsonl",
        '{"workload_id":"w1","n":1e2}\n{ "workload_id": "w2" , "n": 1.50 }\n{}\nnot json\n'
        '{"workload_id":"w5","_bulkpatch":{"status":"failed"}}\n',
    )
    results = [failed(1, "w1"), failed(2, "w2"), failed(3, ""), failed(4, ""), failed(5, "w5", 503)]
    out = tmp_path / "fix.jsonl"
    assert write_failed(ledger_for(source, *results), str(out)) == 5
    lines = out.read_text().splitlines()
    assert lines[0].startswith(
        '{"workload_id":"w1","n":1e2,"_bulkpatch":{"status":"failed","http_status":404,'
    )
    assert lines[1].startswith('{ "workload_id": "w2" , "n": 1.50,"_bulkpatch":')
    assert orjson.loads(lines[2]) == {
        "_bulkpatch": {"status": "failed", "http_status": 404, "error": results[2].error, "row": 3}
    }
    # not JSON: carried by the note, tied to its row (copied bare, a chain counted it twice)
    assert orjson.loads(lines[3])["_bulkpatch"] == {
        "status": "failed",
        "http_status": 404,
        "error": results[3].error,
        "row": 4,
        "raw": "not json",
    }
    assert orjson.loads(lines[4])["_bulkpatch"]["http_status"] == 503


@pytest.mark.parametrize("target", ["input", "ledger", "link", "chain"])
def test_failed_out_never_overwrites_its_own_chain(tmp_path: Path, target: str) -> None:
    source = csv_input(tmp_path, "fix.csv", ["w1,a"])
    ledger = ledger_for(source, failed(1, "w1"))
    other = csv_input(tmp_path, "earlier.csv", ["w0,z"])
    write(tmp_path / "earlier.csv.ledger.jsonl", "")
    (tmp_path / "link.csv").symlink_to(source)
    out = {"input": source, "ledger": ledger, "link": tmp_path / "link.csv", "chain": other}[target]
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="pick another name"):
        write_failed(ledger, str(out))
    assert out.read_bytes() == before


def test_failed_out_makes_an_existing_file_private(tmp_path: Path) -> None:
    source = csv_input(tmp_path, "a.csv", ["w1,a"])
    out = write(tmp_path / "fix.csv", "old")
    out.chmod(0o644)
    write_failed(ledger_for(source, failed(1, "w1")), str(out))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_missing_ledger_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no ledger at"):
        summarise(tmp_path / "nope.jsonl")


def test_a_row_whose_id_was_fixed_replaces_its_original_through_row(tmp_path: Path) -> None:
    source = csv_input(tmp_path, "a.csv", ["w1,a", "ghost,b", ",c"])
    first = ledger_for(
        source,
        ok(1, "w1"),
        failed(2, "ghost"),
        RowResult(3, 4, "", Status.INVALID, None, 0, "missing workload_id"),
    )
    out = tmp_path / "fix.csv"
    assert write_failed(first, str(out)) == 2
    rows = read_csv(out)
    rows[1][0], rows[2][0] = "w2", "w3"  # the operator corrects both ids
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    fix = ledger_for(out, ok(1, "w2"), failed(2, "w3", 503))
    tally = summarise(first, fix)
    assert (tally.total, tally.by_status[Status.OK], tally.by_status[Status.FAILED], tally.bad) == (
        3,
        2,
        1,
        1,
    )
    # The last failure goes round once more, through fix-2.csv: the chain ends clean.
    out2 = tmp_path / "fix-2.csv"
    assert write_failed([first, fix], str(out2)) == 1
    assert read_csv(out2)[1] == ["w3", "c", "failed", "503", "HTTP 503: NotFound: workload w3 not found", "2"]
    fix2 = ledger_for(out2, ok(1, "w3"))
    tally = summarise(first, fix, fix2)
    assert (tally.total, tally.bad, exit_status(tally)) == (3, 0, 0)


def test_jsonl_rows_are_tied_to_their_original_through_the_bulkpatch_object(tmp_path: Path) -> None:
    source = write(tmp_path / "a.jsonl", '{"workload_id":"ghost","name":"x"}\n')
    first = ledger_for(source, failed(1, "ghost"))
    out = tmp_path / "fix.jsonl"
    write_failed(first, str(out))
    out.write_text(out.read_text().replace("ghost", "w1", 1))
    fix = ledger_for(out, ok(1, "w1"))
    assert summarise(first, fix).by_status == {Status.OK: 1}


def test_rows_from_an_earlier_ledger_are_not_tied_by_row_in_a_merged_fix_file(tmp_path: Path) -> None:
    first = ledger_for(csv_input(tmp_path, "a.csv", ["w1,a", "w2,b"]), failed(1, "w1"), failed(2, "w2"))
    fix = ledger_for(csv_input(tmp_path, "fix.csv", ["w2,b2"]), failed(1, "w2"))
    out = tmp_path / "fix-2.csv"
    assert write_failed([first, fix], str(out)) == 2
    # w1 comes from a.csv, two ledgers back: its _row would name the wrong ledger's row.
    assert [(row[0], row[-1]) for row in read_csv(out)[1:]] == [("w1", ""), ("w2", "1")]


def test_a_fix_file_that_is_gone_ties_nothing(tmp_path: Path) -> None:
    first = ledger_for(csv_input(tmp_path, "a.csv", ["ghost,a"]), failed(1, "ghost"))
    out = tmp_path / "fix.csv"
    write_failed(first, str(out))
    fix = ledger_for(out, ok(1, "w1"))
    out.unlink()
    assert summarise(first, fix).by_status == {Status.OK: 1, Status.FAILED: 1}


async def test_failed_out_never_copies_a_row_of_an_input_that_changed_since(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\nw3,c\n")
    api = NamesApi(refuse={"b": 422})
    await Run(RunOptions(input=str(source), base_url=API), transport=MockTransport(api)).execute()
    ledger = f"{source}.ledger.jsonl"
    write(source, "workload_id,name\nw0,z\nw1,a\nw2,b\nw3,c\n")  # tonight's export, one row more
    fix = tmp_path / "fix.csv"
    try:
        write_failed(ledger, str(fix))
    except ConfigError:
        return  # refusing is fine too
    assert "w2" in fix.read_text() and "w1" not in fix.read_text(), fix.read_text()
    api.refuse.clear()
    await Run(RunOptions(input=str(fix), base_url=API), transport=MockTransport(api)).execute()
    tally = summarise(ledger, f"{fix}.ledger.jsonl")
    assert api.names.get("w2") == "b" or tally.bad


# --- hand-edited ledgers and chains with unreadable rows ------------------------------------


@pytest.mark.parametrize(
    "edit",
    [{"ms": 1e308}, {"ms": 1.7976931348623157e308}, {"attempts": 2**64 - 1}, {"status": ["failed"]}],
)
def test_a_hand_edited_record_never_crashes_a_report(tmp_path: Path, edit: dict[str, object]) -> None:
    from click.testing import CliRunner

    from bulkpatch.cli.main import cli

    source = csv_input(tmp_path, "in.csv", ["w1,a", "w2,b"])
    edited = {**orjson.loads(failed(1, "w1").to_json()), **edit}
    ledger = ledger_for(source, orjson.dumps(edited), failed(2, "w2"), failed(2, "w2"))
    for args in ([], ["--json"], ["--failed-out", str(tmp_path / "fix.csv")]):
        result = CliRunner().invoke(cli, ["report", str(ledger), *args], catch_exceptions=False)
        assert result.exit_code == 1, result.output
    assert summarise(ledger).latency.count <= 2


async def chained_report(tmp_path: Path, source: Path, fix_name: str) -> tuple[int, int]:
    """(invalid, failed) over the first run and the run of its fix file, where every row fails."""
    import bulkpatch
    from bulkpatch.testing import MockTransport, Response

    def refuse(request: object) -> Response:
        return Response(404, None, b"not found")

    transport = MockTransport(refuse)
    first = await bulkpatch.run_async(str(source), base_url="https://api.test", transport=transport)
    fix = tmp_path / fix_name
    write_failed(first.ledger_path, str(fix))
    second = await bulkpatch.run_async(str(fix), base_url="https://api.test", transport=transport)
    tally = summarise(first.ledger_path, second.ledger_path)
    return tally.by_status[Status.INVALID], tally.by_status[Status.FAILED]


async def test_a_jsonl_line_that_is_not_json_counts_once_in_a_chain(tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.jsonl",
        '{"workload_id": "w1", "name": "a"}\n{"workload_id": "w2", "name": \n[1, 2]\n{"workload_id": "w3"}\n',
    )
    assert await chained_report(tmp_path, source, "fix.jsonl") == (2, 1)  # w3: skipped
    lines = (tmp_path / "fix.jsonl").read_text().splitlines()
    assert orjson.loads(lines[1])["_bulkpatch"]["raw"] == '{"workload_id": "w2", "name": '
    assert orjson.loads(lines[1])["_bulkpatch"]["row"] == 2


async def test_a_csv_row_of_the_wrong_width_counts_once_in_a_chain(tmp_path: Path) -> None:
    source = csv_input(tmp_path, "in.csv", ["w1,a", "w2,b,extra", "w3"])
    assert await chained_report(tmp_path, source, "fix.csv") == (2, 1)


@pytest.mark.parametrize("out", ["-", "/dev/null", "fifo"])
def test_failed_out_refuses_stdout_and_devices_in_one_line(tmp_path: Path, out: str) -> None:
    source = csv_input(tmp_path, "in.csv", ["w1,a"])
    if out == "fifo":
        os.mkfifo(out := str(tmp_path / "fifo"))
    with pytest.raises(ConfigError, match="--failed-out needs a file name"):
        write_failed(ledger_for(source, failed(1, "w1")), out)
    assert not (tmp_path / "-").exists() and not Path("-").exists()


@pytest.mark.parametrize("target", ["other.ledger.jsonl", "state.db"])
def test_failed_out_refuses_another_chains_ledger_or_a_state(tmp_path: Path, target: str) -> None:
    source = csv_input(tmp_path, "in.csv", ["w1,a"])
    ledger = ledger_for(source, failed(1, "w1"))
    out = tmp_path / target
    out.write_bytes(b"SQLite format 3\x00" if target == "state.db" else b'{"type":"header","input":{}}\n')
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="pick another name"):
        write_failed(ledger, str(out))
    assert out.read_bytes() == before
