from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import orjson
import pytest
from helpers import ledger_rows, ok, run_on_fake_clock, run_options, write
from hypothesis import given
from hypothesis import strategies as st

from bulkpatch.defaults import DEFAULT_PATH
from bulkpatch.errors import ConfigError
from bulkpatch.rows.mapping import Mapper, PathTemplate, Rejected, Request, encode_segment
from bulkpatch.rows.reader import Format, Record
from bulkpatch.rows.schema import Schema
from bulkpatch.testing import MockTransport

HEADER = ["workload_id", "name", "attributes.hostname", "attributes.site", "enabled", "allowed_actions"]


def csv_mapper(header: list[str] = HEADER, **kw: object) -> Mapper:
    return Mapper(PathTemplate(DEFAULT_PATH), fmt=Format.CSV, header=header, **kw)  # type: ignore[arg-type]


def rec(fields: dict[str, object] | None, row: int = 1, error: str | None = None) -> Record:
    return Record(row, row + 1, fields, error)


def test_csv_row_maps_to_path_and_nested_body() -> None:
    mapped = csv_mapper().map(
        rec(
            {
                "workload_id": "abc-1",
                "name": "new name",
                "attributes.hostname": "CORP-1",
                "attributes.site": "",
                "enabled": "No",
                "allowed_actions": "a.b; c.d ;",
            }
        )
    )
    assert isinstance(mapped, Request)
    assert mapped.path == "/api/workload_management/v5/workloads/abc-1"
    assert mapped.key == "abc-1"
    assert orjson.loads(mapped.body or b"") == {
        "name": "new name",
        "attributes": {"hostname": "CORP-1"},
        "enabled": False,
        "allowed_actions": ["a.b", "c.d"],
    }


def test_allowed_actions_as_json_array() -> None:
    mapped = csv_mapper().map(rec({"workload_id": "1", "allowed_actions": '["x", "y"]'}))
    assert isinstance(mapped, Request)
    assert orjson.loads(mapped.body or b"") == {"allowed_actions": ["x", "y"]}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"workload_id": "", "name": "x"}, "missing workload_id"),
        ({"workload_id": "1", "enabled": "maybe"}, "enabled: expected true/false/1/0/yes/no, got 'maybe'"),
        ({"workload_id": "1", "allowed_actions": "[1, 2]"}, "allowed_actions.0"),
    ],
)
def test_invalid_rows_are_rejected_with_a_reason(fields: dict[str, object], reason: str) -> None:
    mapped = csv_mapper().map(rec(fields))
    assert isinstance(mapped, Rejected)
    assert mapped.status == "invalid"
    assert reason in mapped.reason


def test_unknown_field_is_invalid_under_the_workload_schema() -> None:
    mapper = Mapper(PathTemplate(DEFAULT_PATH), fmt=Format.JSONL)
    mapped = mapper.map(rec({"workload_id": "1", "colour": "red"}))
    assert isinstance(mapped, Rejected)
    assert mapped.reason.startswith("colour: unknown field")


def test_any_schema_passes_the_object_through() -> None:
    mapper = Mapper(PathTemplate("/things/{id}"), schema=Schema.ANY, fmt=Format.JSONL)
    mapped = mapper.map(rec({"id": 7, "colour": {"r": 1}}))
    assert isinstance(mapped, Request)
    assert mapped.path == "/things/7"
    assert orjson.loads(mapped.body or b"") == {"colour": {"r": 1}}


def test_jsonl_types_are_checked_strictly() -> None:
    mapper = Mapper(PathTemplate(DEFAULT_PATH), fmt=Format.JSONL)
    assert isinstance(mapper.map(rec({"workload_id": "1", "name": 5})), Rejected)
    assert isinstance(mapper.map(rec({"workload_id": "1", "enabled": True})), Request)


def test_row_with_nothing_to_update_is_skipped() -> None:
    mapped = csv_mapper().map(rec({"workload_id": "1", "name": "", "enabled": ""}))
    assert isinstance(mapped, Rejected)
    assert (mapped.status, mapped.reason) == ("skipped", "no fields to update")


def test_unreadable_record_is_invalid_with_its_reason() -> None:
    mapped = csv_mapper().map(rec(None, error="invalid UTF-8"))
    assert isinstance(mapped, Rejected)
    assert (mapped.status, mapped.reason) == ("invalid", "invalid UTF-8")


def test_delete_sends_no_body() -> None:
    mapper = Mapper(PathTemplate("/w/{workload_id}"), method="DELETE", fmt=Format.JSONL)
    mapped = mapper.map(rec({"workload_id": "1"}))
    assert isinstance(mapped, Request)
    assert mapped.body is None


def test_two_placeholders_make_the_key() -> None:
    mapper = Mapper(PathTemplate("/t/{tenant}/w/{wid}"), schema=Schema.ANY, fmt=Format.JSONL)
    mapped = mapper.map(rec({"tenant": "a b", "wid": "x/y", "v": 1}))
    assert isinstance(mapped, Request)
    assert mapped.path == "/t/a%20b/w/x%2Fy"
    assert mapped.key == "a b/x/y"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("no-slash/{id}", "must start with '/'"),
        ("/w/{id!r}", "plain field name"),
        ("/w/{a.b}", "plain field name"),
        ("/w/{id}/{id}", "twice"),
        ("/w/{id", "not a valid template"),
    ],
)
def test_bad_templates_are_config_errors(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PathTemplate(template)


def test_template_field_missing_from_csv_header_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no column 'workload_id'"):
        csv_mapper(header=["id", "name"])


def test_column_clash_between_object_and_dotted_key() -> None:
    with pytest.raises(ConfigError, match="both set 'attributes'"):
        csv_mapper(header=["workload_id", "attributes", "attributes.site"])


@pytest.mark.parametrize(
    ("value", "encoded"),
    [("..", "%2E%2E"), (".", "%2E"), ("a/b", "a%2Fb"), ("a?b#c", "a%3Fb%23c"), ("é", "%C3%A9")],
)
def test_hostile_segments_are_encoded(value: str, encoded: str) -> None:
    assert encode_segment(value) == encoded


@given(st.text(min_size=1))
def test_any_value_stays_one_segment_and_round_trips(value: str) -> None:
    encoded = encode_segment(value)
    assert "/" not in encoded and "?" not in encoded and "#" not in encoded
    assert encoded not in (".", "..")
    assert unquote(encoded, errors="surrogatepass") == value


def test_a_misspelt_csv_column_is_a_config_error_under_the_workload_schema() -> None:
    with pytest.raises(ConfigError, match="'nmae' is not a workload field"):
        csv_mapper(header=["workload_id", "nmae"])
    csv_mapper(header=["workload_id", "nmae"], schema=Schema.ANY)  # any JSON object: fine


# Typed CSV columns (--schema any) and the columns report --failed-out adds.


def any_mapper(header: list[str]) -> Mapper:
    return Mapper(PathTemplate("/things/{id}"), schema=Schema.ANY, fmt=Format.CSV, header=header)


def body_of(mapped: Request | Rejected) -> object:
    assert isinstance(mapped, Request), mapped
    return orjson.loads(mapped.body or b"")


def test_typed_columns_send_json_values() -> None:
    mapper = any_mapper(["id", "rank:int", "active:bool", "tags:json", "ratio:float", "note"])
    fields = {
        "id": "1",
        "rank:int": "5",
        "active:bool": "true",
        "tags:json": '["a"]',
        "ratio:float": "",
        "note": "5",
    }
    mapped = mapper.map(rec(fields))
    assert isinstance(mapped, Request)
    assert mapped.body == b'{"rank":5,"active":true,"tags":["a"],"note":"5"}'


def test_null_in_a_typed_column_sends_null_and_in_a_plain_one_the_text() -> None:
    mapper = any_mapper(["id", "rank:int", "owner:str", "meta.site:json", "label"])
    fields = {"id": "1", "rank:int": "null", "owner:str": "null", "meta.site:json": "null", "label": "null"}
    assert body_of(mapper.map(rec(fields))) == {
        "rank": None,
        "owner": None,
        "meta": {"site": None},
        "label": "null",
    }


def test_json_column_sends_objects_empty_strings_and_exact_big_integers() -> None:
    mapper = any_mapper(["id", "v:json"])
    assert body_of(mapper.map(rec({"id": "1", "v:json": '{"a": [1, 2.5]}'}))) == {"v": {"a": [1, 2.5]}}
    assert body_of(mapper.map(rec({"id": "1", "v:json": '""'}))) == {"v": ""}
    assert body_of(mapper.map(rec({"id": "1", "v:json": "12345678901234567890"}))) == {
        "v": 12345678901234567890
    }


@pytest.mark.parametrize(
    ("column", "cell", "reason"),
    [
        ("rank:int", "5.5", "rank: expected an integer, got '5.5'"),
        ("rank:int", "1" * 30, "rank: integer out of range (64 bits)"),
        ("ratio:float", "nan", "ratio: expected a number, got 'nan'"),
        ("ratio:float", "1e999", "ratio: number out of range"),
        ("active:bool", "maybe", "active: expected true/false/1/0/yes/no, got 'maybe'"),
        ("tags:json", "[a]", "tags: expected JSON"),
        ("tags:json", "NaN", "tags: expected JSON"),
        ("tags:json", "1" * 30, "tags: expected JSON (integer out of range"),
    ],
)
def test_a_cell_that_is_not_of_its_type_makes_the_row_invalid(column: str, cell: str, reason: str) -> None:
    mapped = any_mapper(["id", column]).map(rec({"id": "1", column: cell}))
    assert isinstance(mapped, Rejected)
    assert mapped.status == "invalid"
    assert mapped.reason.startswith(reason)


def test_typed_float_and_bool_accept_what_spreadsheets_write() -> None:
    mapper = any_mapper(["id", "r:float", "b:bool", "n:int"])
    fields = {"id": "1", "r:float": " 1.50 ", "b:bool": "No", "n:int": "-7"}
    assert body_of(mapper.map(rec(fields))) == {"r": 1.5, "b": False, "n": -7}


@pytest.mark.parametrize(
    ("header", "schema", "message"),
    [
        (["workload_id", "enabled:bool"], Schema.WORKLOAD, "column types need --schema any"),
        (["workload_id", "rank:integer"], Schema.ANY, "unknown type 'integer'"),
        (["workload_id:int", "name"], Schema.ANY, "is a --path field: it takes no type"),
        (["workload_id", "rank", "rank:int"], Schema.ANY, "set the same field"),
        (["workload_id", "meta:json", "meta.site"], Schema.ANY, "both set 'meta'"),
        (["workload_id", ":int"], Schema.ANY, "has a type but no name"),
    ],
)
def test_bad_typed_headers_are_config_errors(header: list[str], schema: Schema, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        csv_mapper(header=header, schema=schema)


def test_a_colon_in_a_field_name_is_kept_with_str() -> None:
    mapper = any_mapper(["id", "ns:tag:str", "time:12"])
    assert body_of(mapper.map(rec({"id": "1", "ns:tag:str": "x", "time:12": "y"}))) == {
        "ns:tag": "x",
        "time:12": "y",
    }


def test_the_unknown_column_error_points_to_schema_any() -> None:
    with pytest.raises(ConfigError, match="use --schema any"):
        csv_mapper(header=["workload_id", "rank"])


def test_failed_out_columns_are_not_sent_from_csv() -> None:
    header = [*HEADER, "_status", "_http_status", "_error", "_row"]
    fields = dict.fromkeys(header, "") | {"workload_id": "w1", "name": "n"}
    fields |= {"_status": "failed", "_http_status": "404", "_error": "HTTP 404", "_row": "7"}
    assert body_of(csv_mapper(header=header).map(rec(fields))) == {"name": "n"}


def test_failed_out_object_is_not_sent_from_jsonl() -> None:
    mapper = Mapper(PathTemplate(DEFAULT_PATH), fmt=Format.JSONL)
    note = {"status": "failed", "http_status": 404, "error": "HTTP 404", "row": 7}
    mapped = mapper.map(rec({"workload_id": "w1", "name": "n", "_bulkpatch": note}))
    assert body_of(mapped) == {"name": "n"}


async def test_only_strings_and_exact_integers_name_a_workload(tmp_path: Path) -> None:
    lines = [
        '{"workload_id": 123456789012345678901234567890, "name": "a"}',
        '{"workload_id": true, "name": "a"}',
        '{"workload_id": 1e2, "name": "a"}',
        '{"workload_id": "\\t", "name": "a"}',
        '{"workload_id": " ", "name": "a"}',
        '{"workload_id": ["x"], "name": "a"}',
        '{"workload_id": 42, "name": "a"}',
        '{"workload_id": "w-1", "name": "a"}',
    ]
    source = write(tmp_path / "in.jsonl", "\n".join(lines) + "\n")
    transport = MockTransport(ok)
    result = await run_on_fake_clock(run_options(source), transport)
    assert [c.url.rsplit("/", 1)[1] for c in transport.requests] == ["42", "w-1"]
    reasons = [r["error"] for r in ledger_rows(f"{source}.ledger.jsonl") if r["status"] == "invalid"]
    assert len(reasons) == 6 and result.exit_code == 1
    assert "not a string or an exact integer" in str(reasons[0])
    assert "a boolean" in str(reasons[1]) and "blank" in str(reasons[3])
