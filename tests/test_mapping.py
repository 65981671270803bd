from __future__ import annotations

from urllib.parse import unquote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkpatch.errors import ConfigError
from bulkpatch.mapping import DEFAULT_PATH, Mapper, PathTemplate, Rejected, Request, encode_segment
from bulkpatch.reader import Format, Record
from bulkpatch.schema import Schema

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
