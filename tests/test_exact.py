"""Values JSON cannot carry exactly make their own row invalid, naming the field: never null, no crash."""

from __future__ import annotations

import decimal
import os
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

import bulkpatch
from bulkpatch.engine.preview import dry_run
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.rows.exact import dumps_exact, inexact
from bulkpatch.testing import MockTransport, Response, SentRequest

INEXACT = [
    (float("nan"), "x: nan is not a JSON number"),
    (float("inf"), "x: inf is not a JSON number"),
    ({"deep": [1, float("-inf")]}, "x.deep[1]: -inf is not a JSON number"),
    ({3, 4}, "x: a set is not a JSON value"),
    (frozenset(), "x: a frozenset is not a JSON value"),
    (b"raw", "x: a bytes is not a JSON value"),
    (bytearray(b"raw"), "x: a bytearray is not a JSON value"),
    (decimal.Decimal("0.1"), "x: a Decimal is not a JSON value"),
    (2**64, "x: integer out of range (beyond 64 bits): 18446744073709551616"),
    (-(2**63), "x: integer out of range (beyond 64 bits): -9223372036854775808"),
    ([10**5000], "x[0]: integer out of range (beyond 64 bits) (16,610 bits)"),
    ("a\udc80b", "x: text holds a lone surrogate (a\\udc80b), not UTF-8"),
    ({"k\ud83d": 1}, "x.k\\ud83d: the field name holds a lone surrogate, not UTF-8"),
    ({1: "one"}, "x: key 1 is not a string"),
    (object(), "x: a object is not a JSON value"),
]


@pytest.mark.parametrize(("value", "reason"), INEXACT)
def test_a_value_without_an_exact_json_form_is_named(value: Any, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        dumps_exact({"x": value})
    assert str(caught.value) == reason
    orjson.dumps(reason)  # the reason itself can go to the ledger


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**63) + 1, 2**64 - 1, 1.5, "é ✓", [1, None], {"n": None}, (1, 2), uuid.UUID(int=1)],
)
def test_values_json_carries_exactly_pass(value: Any) -> None:
    assert inexact({"x": value}) is None
    assert dumps_exact({"x": value}) == orjson.dumps({"x": value})


async def test_library_rows_with_such_values_are_invalid_and_their_neighbours_are_sent(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "v1", "x": float("nan")},
        {"id": "v2", "x": 1},
        {"id": "v3", "x": {"y": decimal.Decimal("2.5")}},
        {"id": "v4", "x": {7, 8}},
        {"id": "v5", "x": -(10**30)},
        {"id": "v6", "x": b"\x00"},
        {"id": "v7\udcff", "x": 1},
        {"id": "v8", "name\ud800": 1},
        {"id": "v9", "x": [float("inf")]},
    ]
    transport = MockTransport(lambda request: Response(204))
    results: list[RowResult] = []
    outcome = await bulkpatch.run_async(
        rows,
        schema="any",
        path="/things/{id}",
        base_url="https://api.test",
        ledger=str(tmp_path / "l.jsonl"),
        transport=transport,
        on_result=results.append,
    )
    sent: list[SentRequest] = transport.requests
    assert [(r.url, r.body) for r in sent] == [("https://api.test/things/v2", b'{"x":1}')]
    assert outcome.exit_code == 1
    by_row = {r.row: r for r in results}
    assert by_row[2].status is Status.OK
    invalid = {row: r.error for row, r in by_row.items() if r.status is Status.INVALID}
    assert invalid == {
        1: "x: nan is not a JSON number",
        3: "x.y: a Decimal is not a JSON value",
        4: "x: a set is not a JSON value",
        5: "x: integer out of range (beyond 64 bits): -1000000000000000000000000000000",
        6: "x: a bytes is not a JSON value",
        7: "id holds a lone surrogate, not UTF-8",
        8: "name\\ud800: the field name holds a lone surrogate, not UTF-8",
        9: "x[0]: inf is not a JSON number",
    }
    assert by_row[7].key == "v7\\udcff"  # written to the ledger as text
    assert (tmp_path / "l.jsonl").read_bytes().count(b'"status":"invalid"') == 8


def test_a_dry_run_of_such_rows_shows_them_invalid() -> None:
    options = RunOptions(input="<rows>", schema="any", path="/things/{id}", dry_run=True, ledger=os.devnull)
    rows = [{"id": "v1", "x": float("nan")}, {"id": "v2", "x": 2}]
    outcome = dry_run(options, rows=rows)
    assert outcome.tally.by_status[Status.INVALID] == outcome.tally.by_status[Status.OK] == 1
    assert [r.reason for r in outcome.rejected] == ["x: nan is not a JSON number"]


def test_typed_csv_cells_and_jsonl_integers_without_an_exact_form_are_invalid(tmp_path: Path) -> None:
    typed = tmp_path / "t.csv"
    typed.write_text(
        'id,t:json,n:int\nv1,"""\\ud800""",1\nv2,1e999,2\nv3,"{""a"": 1}",3\nv4,1,-9223372036854775808\n'
    )
    lines = tmp_path / "t.jsonl"
    lines.write_text('{"id":"v1","x":123456789012345678901234}\n{"id":"v2","x":18446744073709551615}\n')
    for path, rejected, sent in (
        (
            typed,
            [
                "t: text holds a lone surrogate (\\ud800), not UTF-8",
                "t: inf is not a JSON number",
                "n: integer out of range (64 bits), got '-9223372036854775808'",
            ],
            1,
        ),
        (lines, ["x: integer out of range (beyond 64 bits): 123456789012345678901234"], 1),
    ):
        options = RunOptions(input=str(path), schema="any", path="/things/{id}", dry_run=True)
        outcome = dry_run(options)
        assert [r.reason for r in outcome.rejected] == rejected
        assert outcome.tally.by_status[Status.OK] == sent


async def test_a_transform_failing_with_a_lone_surrogate_in_its_message_is_recorded(tmp_path: Path) -> None:
    def transform(fields: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("bad \udcff byte")

    results: list[RowResult] = []
    await bulkpatch.run_async(
        [{"id": "v1"}],
        transform=transform,
        schema="any",
        path="/t/{id}",
        base_url="https://api.test",
        ledger=str(tmp_path / "l.jsonl"),
        transport=MockTransport(lambda request: Response(204)),
        on_result=results.append,
    )
    assert [r.error for r in results] == ["transform failed: ValueError: bad \\udcff byte"]


def test_a_jsonl_integer_of_hundreds_of_digits_is_refused_not_rounded(tmp_path: Path) -> None:
    lines = tmp_path / "long.jsonl"
    lines.write_text('{"id":"v1","x":[-' + "7" * 300 + ']}\n{"id":"v2","x":12345678901234567890.5}\n')
    outcome = dry_run(RunOptions(input=str(lines), schema="any", path="/things/{id}", dry_run=True))
    bits = int("7" * 300).bit_length()
    reason = f"x[0]: integer out of range (beyond 64 bits) ({bits:,} bits)"
    assert [r.reason for r in outcome.rejected] == [reason]
    assert outcome.tally.by_status[Status.OK] == 1  # a float with 20 digits is a float: sent as before
