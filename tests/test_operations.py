"""The library's plan, verify and export (bulkpatch/operations.py), called from Python."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from helpers import ThreadedMock, write

import bulkpatch
from bulkpatch.errors import ConfigError
from bulkpatch.mock import MockConfig, MockServer
from bulkpatch.mock.store import sample_workloads
from bulkpatch.testing import MockTransport, Response, SentRequest


def renames(tmp_path: Path, count: int) -> Path:
    rows = [{"workload_id": w["id"], "name": f"{w['name']}.new"} for w in sample_workloads(count)]
    path = tmp_path / "rename.jsonl"
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


async def test_plan_run_verify_and_roll_back_from_python(tmp_path: Path, mock_server: MockServer) -> None:
    source = renames(tmp_path, 5)
    snapshot = tmp_path / "rename.before.jsonl"
    plan = await bulkpatch.plan_async(source, base_url=mock_server.url, snapshot=snapshot)
    assert isinstance(plan, bulkpatch.PlanResult)
    assert (plan.to_change, plan.unchanged, plan.snapshot_rows) == (5, 0, 5) and plan.requests == 1
    assert dict(plan.fields) == {"name": 5}

    drift = await bulkpatch.verify_async(source, base_url=mock_server.url)
    assert isinstance(drift, bulkpatch.VerifyResult) and (drift.drifted, drift.exit_code) == (5, 1)
    await bulkpatch.run_async(source, base_url=mock_server.url, ledger=os.devnull)
    done = await bulkpatch.verify_async(source, base_url=mock_server.url)
    assert (done.matching, done.drifted, done.exit_code) == (5, 0, 0)

    await bulkpatch.run_async(snapshot, base_url=mock_server.url, ledger=os.devnull)
    undone = await bulkpatch.plan_async(snapshot, base_url=mock_server.url)
    assert (undone.unchanged, undone.snapshot) == (5, None)


async def test_plan_keeps_an_existing_snapshot_unless_told(tmp_path: Path, mock_server: MockServer) -> None:
    source = renames(tmp_path, 2)
    snapshot = tmp_path / "kept.jsonl"
    snapshot.write_text("the rollback of yesterday\n")
    with pytest.raises(ConfigError, match="exists"):
        await bulkpatch.plan_async(source, base_url=mock_server.url, snapshot=snapshot)
    assert snapshot.read_text() == "the rollback of yesterday\n"
    found = await bulkpatch.plan_async(
        source, base_url=mock_server.url, snapshot=snapshot, overwrite_snapshot=True
    )
    assert found.snapshot_rows == 2 and len(snapshot.read_text().splitlines()) == 2


async def test_export_from_python_writes_a_file_run_reads_back(
    tmp_path: Path, mock_server: MockServer
) -> None:
    out = tmp_path / "fleet.jsonl"
    result = await bulkpatch.export_async(out, base_url=mock_server.url, columns=["name"], page_size=20)
    assert isinstance(result, bulkpatch.ExportResult)
    assert result.written == 50 and result.requests == 3 and result.columns == ["name"]
    first = orjson.loads(out.read_bytes().splitlines()[0])
    assert set(first) == {"workload_id", "name"}
    same = await bulkpatch.plan_async(out, base_url=mock_server.url)
    assert same.unchanged == 50 and same.to_change == 0


def test_the_blocking_twins_take_a_given_transport_and_headers(tmp_path: Path) -> None:
    seen: list[SentRequest] = []

    def listing(request: SentRequest) -> Response:
        seen.append(request)
        return Response(200, body=b'{"items": [{"id": "w1", "name": "a"}], "paging": {"cursors": {}}}')

    result = bulkpatch.export(
        tmp_path / "one.csv",
        base_url="https://api.test",
        token="s3cret",
        headers=["X-Tenant: t1"],
        tenant_id="t1",
        transport=MockTransport(listing),
    )
    assert result.written == 1 and (tmp_path / "one.csv").read_text().startswith("workload_id,name")
    assert seen[0].headers["Authorization"] == "Bearer s3cret" and seen[0].headers["X-Tenant"] == "t1"
    assert "tenant_id=t1" in seen[0].url


@pytest.mark.parametrize("call", [bulkpatch.plan, bulkpatch.verify, bulkpatch.export])
def test_the_blocking_twins_refuse_a_running_loop_before_doing_anything(call: object, tmp_path: Path) -> None:
    import asyncio

    async def inside() -> None:
        with pytest.raises(bulkpatch.LoopRunning, match="_async"):
            call(tmp_path / "x.csv", base_url="https://api.test")  # type: ignore[operator]

    asyncio.run(inside())
    assert list(tmp_path.iterdir()) == []


ENV = {k: v for k, v in os.environ.items() if not k.startswith("BULKPATCH_")}


@pytest.mark.slow
@pytest.mark.parametrize(("command", "status"), [("plan", 0), ("verify", 1)])
def test_a_closed_stdout_keeps_the_exit_status_and_shows_no_traceback(
    tmp_path: Path, command: str, status: int
) -> None:
    """``bulkpatch plan … | head -1``: here the reader is gone before the first line."""
    rows = "".join(f"{w['id']},renamed-{i}\n" for i, w in enumerate(sample_workloads(300)))
    source = write(tmp_path / "in.csv", "workload_id,name\n" + rows)
    with ThreadedMock(MockConfig(require_auth=False, workloads=300)) as mock:
        read, written = os.pipe()
        os.close(read)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bulkpatch", command, str(source), "--base-url", mock.url, "-q"],
                stdout=written,
                stderr=subprocess.PIPE,
                env=ENV,
                timeout=120,
            )
        finally:
            os.close(written)
    assert done.returncode == status, done.stderr.decode()
    assert done.stderr == b""
    if command == "plan":
        assert (tmp_path / "in.before.csv").read_text().count("\n") == 301
