from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from helpers import ThreadedMock

import bulkpatch
from bulkpatch.cli.main import _Group
from bulkpatch.cli.operations import plan, verify
from bulkpatch.errors import ConfigError
from bulkpatch.http.transport import AiohttpTransport
from bulkpatch.mock import MockConfig, MockServer
from bulkpatch.mock.store import sample_workloads
from bulkpatch.ops.compare import MISSING, Diff, diff, same
from bulkpatch.ops.plan import CHANGES, NOT_FOUND, NOT_PLANNED, REPEATED, UNCHANGED, plan_rows
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import iter_records
from bulkpatch.rows.schema import Schema

CLI = _Group(commands={"plan": plan, "verify": verify})


def fields_of(store: Any) -> dict[str, dict[str, Any]]:
    return {i: {k: v for k, v in w.items() if k != "updated_at"} for i, w in store._items.items()}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


@pytest.mark.slow
def test_plan_5000_rows_with_50_changes_then_the_snapshot_undoes_them(tmp_path: Path) -> None:
    rows, changed = [], set()
    for i, w in enumerate(sample_workloads(5000)):
        name, site = w["name"], w["attributes"]["site"]
        if i % 100 == 7:
            name, site = f"{name}.renamed", "fra9" if i % 200 == 7 else site
            changed.add(w["id"])
        rows.append([w["id"], name, site, "true"])
    source = write_csv(tmp_path / "change.csv", ["workload_id", "name", "attributes.site", "enabled"], rows)
    with ThreadedMock(MockConfig(require_auth=False, workloads=5000)) as mock:
        original = fields_of(mock.api.store)
        result = CliRunner().invoke(CLI, ["plan", str(source), "--base-url", mock.url])
        assert result.exit_code == 0, result.output
        assert mock.api.counters.requests == 50
        assert "Plan: 50 to change, 4,950 unchanged, 0 not found." in result.output
        assert "attributes.site                  25 rows" in result.output
        assert fields_of(mock.api.store) == original  # planning sends nothing

        snapshot = tmp_path / "change.before.csv"
        with snapshot.open(newline="") as f:
            saved = list(csv.DictReader(f))
        assert {row["workload_id"] for row in saved} == changed
        assert all(row["enabled"] == "" for row in saved)  # only the fields that change

        assert bulkpatch.run(str(source), base_url=mock.url, ledger=os.devnull).exit_code == 0
        moved = fields_of(mock.api.store)
        assert {i for i in moved if moved[i] != original[i]} == changed
        assert bulkpatch.run(str(snapshot), base_url=mock.url, ledger=os.devnull).exit_code == 0
        assert fields_of(mock.api.store) == original
        # ...and read back through GET: the snapshot's values are the live ones again.
        check = CliRunner().invoke(CLI, ["verify", str(snapshot), "--base-url", mock.url])
        assert check.exit_code == 0, check.output


async def test_the_mask_marks_each_row_and_repeats_missing_and_invalid_rows_are_sent(
    tmp_path: Path,
) -> None:
    fleet = list(sample_workloads(4))
    rows = [
        {"workload_id": fleet[0]["id"], "name": fleet[0]["name"]},
        {"workload_id": fleet[1]["id"], "attributes": {"site": "new", "os": fleet[1]["attributes"]["os"]}},
        {"workload_id": "no-such-workload", "name": "x"},
        {"workload_id": fleet[0]["id"], "name": "again"},
        {"workload_id": fleet[2]["id"], "enabled": "maybe"},
        {"workload_id": fleet[3]["id"]},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    async with MockServer(MockConfig(require_auth=False, workloads=4)) as server:
        options = RunOptions(input=str(source), base_url=server.url)
        async with AiohttpTransport(limit=4, timeout=10) as transport:
            result = await plan_rows(options, transport, snapshot=str(tmp_path / "before.jsonl"))
    assert list(result.mask) == [UNCHANGED, CHANGES, NOT_FOUND, REPEATED, NOT_PLANNED, NOT_PLANNED]
    assert [result.should_send(row) for row in range(1, 8)] == [False, True, True, True, True, True, True]
    assert (result.to_change, result.unchanged, result.not_found, result.repeated) == (1, 1, 1, 1)
    assert result.missing == ["no-such-workload"] and result.requests == 1
    assert result.examples == [
        (2, fleet[1]["id"], Diff("attributes.site", fleet[1]["attributes"]["site"], "new"))
    ]
    snapshot = [orjson.loads(line) for line in (tmp_path / "before.jsonl").read_bytes().splitlines()]
    assert snapshot == [
        {"workload_id": fleet[1]["id"], "attributes": {"site": fleet[1]["attributes"]["site"]}},
        {"workload_id": fleet[0]["id"], "name": fleet[0]["name"]},
    ]


async def test_what_a_snapshot_cannot_restore_is_counted(tmp_path: Path) -> None:
    workload = next(sample_workloads(1))
    workload["attributes"]["rack"] = 12
    seed = write_jsonl(tmp_path / "seed.jsonl", [workload])
    header = ["workload_id", "attributes.rack", "attributes.owner"]
    source = write_csv(tmp_path / "in.csv", header, [[workload["id"], "13", "sre"]])
    async with MockServer(MockConfig(require_auth=False, seed_file=str(seed))) as server:
        options = RunOptions(input=str(source), base_url=server.url)
        async with AiohttpTransport(limit=4, timeout=10) as transport:
            as_csv = await plan_rows(options, transport, snapshot=str(tmp_path / "before.csv"))
            as_jsonl = await plan_rows(options, transport, snapshot=str(tmp_path / "before.jsonl"))
    # "owner" did not exist (a PATCH cannot remove it); a CSV cell would send 12 back as "12".
    assert dict(as_csv.irreversible.by_column) == {"attributes.owner": 1, "attributes.rack": 1}
    assert dict(as_jsonl.irreversible.by_column) == {"attributes.owner": 1}
    saved = orjson.loads((tmp_path / "before.jsonl").read_bytes())
    assert saved == {"workload_id": workload["id"], "attributes": {"rack": 12}}


def test_json_equality_and_attributes_key_by_key() -> None:
    assert same(1, 1.0) and not same(True, 1) and not same("1", 1) and not same(None, MISSING)
    assert not same([1, 2], [2, 1]) and same({"a": [1]}, {"a": [1.0]})
    live = {"name": "a", "attributes": {"site": "x", "os": "y"}, "enabled": True}
    assert diff({"attributes": {"site": "x"}, "enabled": True}, live) == []
    assert diff({"attributes": {"site": "z", "new": 1}}, live) == [
        Diff("attributes.site", "x", "z"),
        Diff("attributes.new", MISSING, 1),
    ]


async def test_plans_need_the_workload_path_method_and_schema(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"workload_id": "w", "name": "n"}])
    for changed in ({"schema": Schema.ANY}, {"method": "PUT"}, {"path": "/v2/things/{workload_id}"}):
        options = RunOptions(input=str(source), base_url="http://127.0.0.1:9", **changed)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="plan and verify compare workloads"):
            await plan_rows(options, AiohttpTransport(limit=1, timeout=1))


def test_plan_without_a_base_url_is_one_line_exit_2(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"workload_id": "w", "name": "n"}])
    result = CliRunner().invoke(CLI, ["plan", str(source)])
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0
    assert "--base-url" in result.output


def test_plan_never_replaces_an_earlier_snapshot_unless_told(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"workload_id": "w", "name": "n"}])
    rollback = tmp_path / "in.before.jsonl"
    rollback.write_text('{"workload_id": "w", "name": "before"}\n')
    with ThreadedMock(MockConfig(require_auth=False, workloads=1)) as mock:
        refused = CliRunner().invoke(CLI, ["plan", str(source), "--base-url", mock.url])
        assert refused.exit_code == 2 and "exists" in refused.output
        assert rollback.read_text() == '{"workload_id": "w", "name": "before"}\n'
        again = CliRunner().invoke(CLI, ["plan", str(source), "--base-url", mock.url, "--overwrite-snapshot"])
    assert again.exit_code == 0, again.output
    assert "1 not found: w" in again.output and rollback.read_text() == ""


def test_run_only_changed_sends_just_the_rows_that_change_and_verify_reads_them_back(tmp_path: Path) -> None:
    """Issue 13: run --only-changed plans on the fly; run --verify exits 1 on drift."""
    from bulkpatch.cli.main import cli

    rows = []
    for i, w in enumerate(sample_workloads(300)):
        rows.append([w["id"], f"{w['name']}.v2" if i % 30 == 0 else w["name"]])
    source = write_csv(tmp_path / "names.csv", ["workload_id", "name"], rows)
    with ThreadedMock(MockConfig(require_auth=False, workloads=300)) as mock:
        args = ["run", str(source), "--base-url", mock.url, "--only-changed", "--verify", "--no-progress"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output + (result.stderr or "")
        assert sum(mock.api.counters.patches.values()) == 10
        assert "verified through GET: 300 of 300 rows match" in result.output
        records = [r for r in iter_records(f"{source}.ledger.jsonl") if r["type"] == "row"]
        assert sorted({str(r["status"]) for r in records}) == ["ok", "unchanged"] and len(records) == 300
        # Someone changes a workload behind our back: the next --only-changed run puts it right
        # (one request), and verify, run after another change, says so.
        first = rows[0][0]
        mock.api.store.update(first, {"name": "changed-live"})
        sent = sum(mock.api.counters.patches.values())
        again = CliRunner().invoke(
            cli, ["run", str(source), "--base-url", mock.url, "--verify", "--no-progress", "--only-changed"]
        )
        assert again.exit_code == 0 and sum(mock.api.counters.patches.values()) == sent + 1
        mock.api.store.update(first, {"name": "changed-live"})
        drift = CliRunner().invoke(cli, ["verify", str(source), "--base-url", mock.url])
        assert drift.exit_code == 1 and "1 differ" in drift.output, drift.output


def test_only_changed_needs_a_file_and_the_workload_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="it needs a file"):
        RunOptions(input="-", base_url="http://x", ledger="l", only_changed=True)
    with pytest.raises(ConfigError, match="default --path"):
        RunOptions(input="x.csv", base_url="http://x", path="/other/{id}", only_changed=True)
