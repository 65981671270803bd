"""A CSV quote that never closes stops the read at the line where it opened, before its rows go out."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write

import bulkpatch
from bulkpatch.cli.main import cli
from bulkpatch.errors import MalformedInput
from bulkpatch.rows import quotes
from bulkpatch.rows.reader import InputFile
from bulkpatch.testing import MockTransport, Response, SentRequest


def keys(path: Path) -> list[str]:
    found = []
    with InputFile(str(path)) as source:
        for record in source:
            found.append((record.fields or {}).get("id", "?"))
    return found


def test_a_quote_open_at_the_end_of_the_file_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", 'id,v\nv1,"two\nlines"\nv2,x\nv3,"open\nv4,y\nv5,z\n')
    seen: list[str] = []

    def read() -> None:
        with InputFile(str(path)) as source:
            seen.extend((record.fields or {})["id"] for record in source)

    with pytest.raises(MalformedInput, match=r"a\.csv: line 5: a quoted field opened there is never closed"):
        read()
    assert seen == ["v1", "v2"]  # the rows before it are read; v3 (holding v4, v5) is not


@pytest.mark.parametrize(
    "text",
    [
        'id,v\nv1,x\nv2,"o',  # the last line, no newline
        'id,v\r\nv1,"a\r\nv2,b\r\n',  # CRLF
        'id,"v\nv1,a\n',  # the header
    ],
)
def test_other_shapes_of_an_open_quote(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "b.csv", text)
    with pytest.raises(MalformedInput, match="never closed"):
        keys(path)


def test_closed_quotes_and_stray_quotes_read_as_before(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", 'id,v\nv1,12" disk\nv2,"say ""hi"""\nv3,"a\nb"\nv4,x"y')
    with InputFile(str(path)) as source:
        assert [r.fields for r in source] == [
            {"id": "v1", "v": '12" disk'},
            {"id": "v2", "v": 'say "hi"'},
            {"id": "v3", "v": "a\nb"},
            {"id": "v4", "v": 'x"y'},
        ]


def test_a_record_running_on_past_the_bound_stops_as_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quotes, "MAX_SPAN", 1000)
    rows = "".join(f"w{i},name {i}\n" for i in range(2, 5000))
    path = write(tmp_path / "d.csv", f'id,v\nw0,"{"x" * 2000}"\nw1,"unclosed\n{rows}')
    seen: list[str] = []

    def read() -> None:
        with InputFile(str(path)) as source:
            for record in source:
                seen.append(record.fields["id"] if record.fields else "?")
                assert source.bytes_read < 64 * 1024  # found as it streams, not at the end

    with pytest.raises(MalformedInput, match=r"line 3: a quoted field opened there runs on .* past 1,000"):
        read()
    assert seen == ["w0"]  # a long single-line cell is fine


async def test_a_run_sends_the_rows_before_it_and_none_of_the_swallowed_ones(tmp_path: Path) -> None:
    rows = "".join(f"w{i},n{i}\n" for i in range(3, 300))
    path = write(tmp_path / "e.csv", f'id,v\nw1,a\nw2,"unclosed\n{rows}')
    transport = MockTransport(lambda request: Response(204))
    with pytest.raises(MalformedInput, match="line 3"):
        await bulkpatch.run_async(
            str(path), schema="any", path="/t/{id}", base_url="https://api.test", transport=transport
        )
    sent: list[SentRequest] = transport.requests
    assert [r.url for r in sent] == ["https://api.test/t/w1"]


def test_the_command_exits_2_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", 'workload_id,name\nw1,a\nw2,"open\nw3,b\n')
    for args in (["run", str(path), "--dry-run"], ["run", str(path), "--base-url", "http://127.0.0.1:9"]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 2, result.output
        assert "line 3: a quoted field opened there is never closed" in result.stderr
        assert "Traceback" not in result.output
