"""Rate cap and server-driven slow-down, end to end against the mock on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from fakes import write

from bulkpatch.ledger import Status
from bulkpatch.mock import MockConfig, MockServer
from bulkpatch.mock.app import busiest_window
from bulkpatch.mock.store import sample_workloads
from bulkpatch.options import RunOptions
from bulkpatch.pipeline import Run


def fleet_csv(tmp_path: Path, n: int) -> Path:
    rows = "".join(f"{w['id']},name-{i}\n" for i, w in enumerate(sample_workloads(n)))
    return write(tmp_path / "fleet.csv", "workload_id,name\n" + rows)


async def test_rate_cap_holds_at_the_server(tmp_path: Path) -> None:
    rows = 250
    source = fleet_csv(tmp_path, rows)
    async with MockServer(MockConfig(require_auth=False, workloads=rows)) as server:
        options = RunOptions(input=str(source), base_url=server.url, concurrency=64, rate=100)
        result = await Run(options).execute()
        arrivals = list(server.api.counters.arrivals)
    assert result.exit_code == 0 and len(arrivals) == rows
    # 100/s with a burst allowance of 5: no one-second window at the server holds more than 106.
    assert busiest_window(arrivals, 1.0) <= 106
    assert arrivals[-1] - arrivals[0] >= (rows - 6) / 100 - 0.05  # less only by timer rounding


async def test_429s_pause_everyone_and_shrink_concurrency(tmp_path: Path) -> None:
    rows = 600
    source = fleet_csv(tmp_path, rows)
    events: list[tuple[str, dict[str, object]]] = []
    config = MockConfig(require_auth=False, workloads=rows, rate_limit=200, retry_after=1)
    async with MockServer(config) as server:
        options = RunOptions(input=str(source), base_url=server.url, concurrency=64)
        result = await Run(options, events=lambda e, f: events.append((e, f))).execute()
        statuses = server.api.counters.by_status
    assert result.exit_code == 0
    assert result.state[Status.OK] == rows
    # Each burst of 429s costs about one in-flight window, not a retry storm.
    assert statuses[429] <= 0.15 * (statuses[429] + statuses[204])
    limits = [f["value"] for e, f in events if e == "concurrency_changed"]
    assert limits and limits[0] == 32
    assert any(e == "retry_scheduled" and f["retry_after"] == 1.0 for e, f in events)
