"""Every stderr line, text or JSON: the format is known before click parses anything."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from bulkpatch.cli import stderr


@pytest.fixture(autouse=True)
def _text_again() -> Iterator[None]:
    yield
    stderr.use_format("text")


@pytest.mark.parametrize(
    ("args", "found"),
    [
        (["run", "a.csv", "--log-format", "json"], "json"),
        (["run", "a.csv", "--log-format=json", "--log-format", "text"], "text"),  # the last one wins
        (["run", "a.csv", "--log-format", "yaml"], None),
        (["run", "--", "--log-format", "json"], None),  # after --, words are arguments
        (["run", "a.csv"], None),
    ],
)
def test_the_format_is_read_from_the_command_line(args: list[str], found: str | None) -> None:
    assert stderr.format_in(args) == found


def test_notices_warnings_and_the_end_are_json_objects(capsys: pytest.CaptureFixture[str]) -> None:
    stderr.use_format("json", named=True)
    stderr.notice("kept the old ledger as a.ledger.1")
    stderr.warning("notifying https://hooks.test failed: HTTP 500")
    stderr.end(1, None, fields={"requests": 3})
    records = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["level"], r["event"]) for r in records] == [
        ("info", "notice"),
        ("warning", "warning"),
        ("warning", "end"),
    ]
    assert records[2]["exit_code"] == 1 and records[2]["requests"] == 3


def test_text_lines_stay_as_they_were(capsys: pytest.CaptureFixture[str]) -> None:
    stderr.notice("kept the old ledger")
    stderr.end(0, None)  # text mode: no end line of its own; the summary said it all
    stderr.end(2, "--base-url is required")
    assert capsys.readouterr().err.splitlines() == [
        "bulkpatch: kept the old ledger",
        "bulkpatch: error: --base-url is required",
    ]
