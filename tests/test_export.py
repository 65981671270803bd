from __future__ import annotations

import asyncio
import copy
import csv
import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from click.testing import CliRunner
from helpers import ThreadedMock

import bulkpatch
from bulkpatch.cli.main import _Group
from bulkpatch.cli.operations import export, plan, verify
from bulkpatch.errors import ConfigError
from bulkpatch.http.transport import BODY_KEEP
from bulkpatch.mock import MockConfig
from bulkpatch.mock.store import encode_cursor, sample_workloads
from bulkpatch.ops.export import cell_for, export_workloads, parse_columns
from bulkpatch.ops.live import Include, LiveReader
from bulkpatch.rows.reader import Format
from bulkpatch.testing import MockTransport, Response, SentRequest

CLI = _Group(commands={"export": export, "plan": plan, "verify": verify})


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(CLI, list(args), env=env)


def unchanging(store: Any) -> dict[str, dict[str, Any]]:
    """Every workload as stored, but for ``updated_at`` (a PATCH of the same values moves it)."""
    return {
        workload_id: {k: copy.deepcopy(v) for k, v in item.items() if k != "updated_at"}
        for workload_id, item in store._items.items()
    }


def seed_file(path: Path, items: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return str(path)


@pytest.mark.slow
def test_export_5000_in_pages_of_10_then_run_and_plan_change_nothing(tmp_path: Path) -> None:
    out = tmp_path / "workloads.csv"
    with ThreadedMock(MockConfig(require_auth=False, workloads=5000)) as mock:
        result = invoke("export", "--base-url", mock.url, "-o", str(out), "--page-size", "10")
        assert result.exit_code == 0, result.output
        assert mock.api.counters.requests == 500
        with out.open(newline="") as f:
            rows = list(csv.DictReader(f))
        ids = [row["workload_id"] for row in rows]
        assert len(ids) == 5000 and set(ids) == set(mock.api.store._items)
        assert rows[0]["enabled"] == "true"
        assert orjson.loads(rows[0]["allowed_actions"])[0].startswith("cti.a.ui.item")

        before = unchanging(mock.api.store)
        summary = bulkpatch.run(str(out), base_url=mock.url, ledger=os.devnull)
        assert summary.exit_code == 0 and summary.tally.as_dict()["ok"] == 5000
        assert unchanging(mock.api.store) == before

        result = invoke("plan", str(out), "--base-url", mock.url)
        assert result.exit_code == 0, result.output
        assert "Plan: 0 to change, 5,000 unchanged, 0 not found." in result.output


def test_an_edited_cell_is_the_only_change(tmp_path: Path) -> None:
    out = tmp_path / "workloads.csv"
    with ThreadedMock(MockConfig(require_auth=False, workloads=30)) as mock:
        assert invoke("export", "--base-url", mock.url, "-o", str(out)).exit_code == 0
        with out.open(newline="") as f:
            rows = list(csv.reader(f))
        rows[1][rows[0].index("attributes.site")] = "fra9"
        with out.open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
        before = unchanging(mock.api.store)
        bulkpatch.run(str(out), base_url=mock.url, ledger=os.devnull)
        after = unchanging(mock.api.store)
    edited = rows[1][0]
    assert after[edited]["attributes"] == {**before[edited]["attributes"], "site": "fra9"}
    after[edited]["attributes"]["site"] = before[edited]["attributes"]["site"]
    assert after == before


def test_values_a_csv_cell_cannot_carry_are_left_empty_and_jsonl_keeps_them(tmp_path: Path) -> None:
    items = list(sample_workloads(3))
    items[0]["attributes"]["rack"] = 12
    items[1]["attributes"]["retired"] = None
    items[2]["attributes"]["late"] = "seen on page 2 only"
    seed = seed_file(tmp_path / "seed.jsonl", items)
    with ThreadedMock(MockConfig(require_auth=False, seed_file=seed)) as mock:
        csv_out, jsonl_out = tmp_path / "w.csv", tmp_path / "w.jsonl"
        # One workload per page: the CSV's header comes from the first page only.
        result = invoke("export", "--base-url", mock.url, "-o", str(csv_out), "--page-size", "1")
        assert result.exit_code == 0, result.output
        assert "left empty" in result.output and "attributes.rack (1)" in result.output
        before = unchanging(mock.api.store)
        bulkpatch.run(str(csv_out), base_url=mock.url, ledger=os.devnull)
        assert unchanging(mock.api.store) == before

        assert invoke("export", "--base-url", mock.url, "-o", str(jsonl_out)).exit_code == 0
        exported = {r["workload_id"]: r for r in map(orjson.loads, jsonl_out.read_bytes().splitlines())}
        assert exported[items[0]["id"]]["attributes"]["rack"] == 12
        assert exported[items[1]["id"]]["attributes"]["retired"] is None
        bulkpatch.run(str(jsonl_out), base_url=mock.url, ledger=os.devnull)
        assert unchanging(mock.api.store) == before
        assert mock.api.store.get(items[0]["id"])["attributes"]["rack"] == 12  # type: ignore[index]


def test_keys_first_seen_after_the_csv_header_are_reported() -> None:
    items = list(sample_workloads(2))
    items[1]["attributes"]["late"] = "x"
    items.sort(key=lambda item: item["id"])
    items[-1]["attributes"]["late"] = "x"
    pages = [items[:1], items[1:]]

    def answer(request: SentRequest) -> Response:
        query = parse_qs(urlsplit(request.url).query)
        page = 1 if "after" in query else 0
        cursors = {"after": encode_cursor(pages[0][0]["id"])} if page == 0 else {}
        return Response(200, body=orjson.dumps({"items": pages[page], "paging": {"cursors": cursors}}))

    result = _export_with(MockTransport(answer), Format.CSV)
    assert result.unseen_keys.by_column["attributes.late"] == 1
    assert "attributes.late" not in (result.columns or [])


def test_a_cut_page_is_asked_again_smaller_and_nothing_is_lost_or_repeated() -> None:
    fleet = sorted(sample_workloads(40), key=lambda item: item["id"])
    limits: list[int] = []

    def answer(request: SentRequest) -> Response:
        query = parse_qs(urlsplit(request.url).query)
        limit = int(query["limit"][0])
        limits.append(limit)
        if limit > 8:  # the transport keeps BODY_KEEP bytes: a longer answer arrives cut
            return Response(200, body=b"x" * BODY_KEEP)
        start = 0
        if "after" in query:
            start = next(i for i, w in enumerate(fleet) if encode_cursor(w["id"]) == query["after"][0]) + 1
        chunk = fleet[start : start + limit]
        cursors = {"after": encode_cursor(chunk[-1]["id"])} if start + limit < len(fleet) else {}
        return Response(200, body=orjson.dumps({"items": chunk, "paging": {"cursors": cursors}}))

    out = io.BytesIO()
    transport = MockTransport(answer)
    reader = LiveReader(transport, "http://api.test", page_size=32, body_limit=BODY_KEEP)
    result = asyncio.run(export_workloads(reader, out, fmt=Format.JSONL))
    ids = [orjson.loads(line)["workload_id"] for line in out.getvalue().splitlines()]
    assert ids == [w["id"] for w in fleet] and result.written == 40
    assert limits[:3] == [32, 16, 8] and set(limits[3:]) == {8}


def test_filters_and_include_flags_reach_the_query() -> None:
    seen: list[str] = []

    def answer(request: SentRequest) -> Response:
        seen.append(request.url)
        return Response(200, body=b'{"items": [], "paging": {"cursors": {}}}')

    from bulkpatch.ops.live import list_filters

    filters = list_filters(("t1", "t2"), "tenant-9", ("w1",), "2026-01-31T00:00:00Z")
    _export_with(MockTransport(answer), Format.CSV, filters=filters, columns=["name", "attributes.site"])
    query = parse_qs(urlsplit(seen[0]).query)
    assert query["type"] == ["or(t1,t2)"] and query["tenant_id"] == ["tenant-9"]
    assert query["workload_id"] == ["w1"] and query["updated_at"] == ["ge(2026-01-31T00:00:00Z)"]
    assert query["include_attributes"] == ["site"] and "include_allowed_actions" not in query


def test_bad_options_are_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, words in [
        (["--updated-since", "yesterday"], "RFC 3339"),
        (["--columns", "name,owner"], "not a workload field"),
        (["--columns", "attributes,attributes.site"], "overlap"),
        (["--base-url", "ftp://x"], "http"),
    ]:
        result = invoke("export", "-o", str(tmp_path / "x.csv"), "--base-url", "http://127.0.0.1:9", *args)
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.csv.part").exists()


def test_export_authenticates_from_the_environment_and_never_prints_the_token(tmp_path: Path) -> None:
    config = MockConfig(workloads=5, static_tokens=("s3cret-token",))
    with ThreadedMock(config) as mock:
        ok = invoke("export", "--base-url", mock.url, "-o", str(tmp_path / "w.jsonl"),
                    env={"BULKPATCH_TOKEN": "s3cret-token"})  # fmt: skip
        assert ok.exit_code == 0, ok.output
        refused = invoke("export", "--base-url", mock.url, "-o", str(tmp_path / "x.jsonl"),
                         env={"BULKPATCH_TOKEN": "wrong-token"})  # fmt: skip
    assert refused.exit_code == 2 and "401" in refused.output and "wrong-token" not in refused.output
    assert len((tmp_path / "w.jsonl").read_bytes().splitlines()) == 5
    assert not (tmp_path / "x.jsonl").exists()


def test_cells_read_back_as_the_same_values() -> None:
    assert cell_for("enabled", False) == "false"
    assert cell_for("allowed_actions", ["a", "b"]) == '["a","b"]'
    assert cell_for("attributes", {"rack": 12}) == '{"rack":12}'
    assert cell_for("attributes.rack", 12) is None
    assert cell_for("name", None) is None
    with pytest.raises(ConfigError):
        parse_columns("attributes.a.b")
    assert Include(attributes=("a,b",)).params()[0] == ("include_all_attributes", "true")


def _export_with(transport: MockTransport, fmt: Format, **kw: Any) -> Any:
    reader = LiveReader(transport, "http://api.test")
    buffer = io.BytesIO()
    return asyncio.run(export_workloads(reader, buffer, fmt=fmt, **kw))
