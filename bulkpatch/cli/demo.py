"""The demo: a sample migration against the embedded mock API, verified afterwards (the CLI's
``bulkpatch demo`` prints it).

The migration renames every workload, moves it to a new site, records an owner and disables the
retired ones. ``samples/workloads.csv`` and ``samples/workloads.jsonl`` in the repository are this
same migration (a test keeps them equal).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bulkpatch.engine.run import Run
from bulkpatch.http.auth import ClientCredentials, token_url_for
from bulkpatch.http.transport import AiohttpTransport, Transport
from bulkpatch.mock import MockConfig, MockServer
from bulkpatch.mock.store import sample_workloads
from bulkpatch.options import RunOptions
from bulkpatch.records.results import RunResult
from bulkpatch.rows.mapping import encode_segment

DEMO_ROWS = 1000
CSV_COLUMNS = ["workload_id", "name", "attributes.site", "attributes.owner", "enabled"]
_OWNERS = ["it-ops", "finance-it", "sre", "desktop-support"]


def demo_mock_config() -> MockConfig:
    """Mild, realistic trouble: latency, a few 503s, dropped connections, a rate limit."""
    return MockConfig(
        workloads=DEMO_ROWS,
        latency_ms=5,
        latency_jitter_ms=25,
        error_rate=0.03,
        drop_rate=0.01,
        rate_limit=400,
        retry_after=1,
        token_lifetime=3600,
    )


def migration(count: int = DEMO_ROWS) -> Iterator[dict[str, Any]]:
    """The demo's changes, one per workload of the mock's default fleet."""
    for i, workload in enumerate(sample_workloads(count), start=1):
        hostname = workload["attributes"]["hostname"]
        yield {
            "workload_id": workload["id"],
            "name": f"{hostname.lower()}.corp.example",
            "attributes": {"site": "fra2", "owner": _OWNERS[i % len(_OWNERS)]},
            "enabled": i % 25 != 0,
        }


def migration_csv(count: int = DEMO_ROWS) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for change in migration(count):
        attrs = change["attributes"]
        enabled = "true" if change["enabled"] else "false"
        writer.writerow([change["workload_id"], change["name"], attrs["site"], attrs["owner"], enabled])
    return out.getvalue()


def migration_jsonl(count: int = DEMO_ROWS) -> str:
    return "".join(orjson.dumps(change).decode() + "\n" for change in migration(count))


async def verify(transport: Transport, base_url: str, authorization: str) -> tuple[int, list[str]]:
    """Page through every workload and check it carries the migration's values.

    Returns how many workloads were checked and a description of each mismatch.
    """
    wanted = {change["workload_id"]: change for change in migration()}
    headers = {"Authorization": authorization, "Accept": "application/json"}
    seen: set[str] = set()
    problems: list[str] = []
    url = f"{base_url}/api/workload_management/v5/workloads?limit=50&include_all_attributes=true"
    after: str | None = None
    while True:
        page_url = url if after is None else f"{url}&after={encode_segment(after)}"
        response = await transport.send("GET", page_url, None, headers)
        if response.status != 200:
            problems.append(f"listing answered HTTP {response.status}")
            break
        page = orjson.loads(response.body)
        for item in page["items"]:
            if item["id"] in seen:
                problems.append(f"{item['id']} listed twice")
            seen.add(item["id"])
            change = wanted.get(item["id"])
            if change is None:
                continue
            attrs = item.get("attributes", {})
            if (
                item["name"] != change["name"]
                or item["enabled"] != change["enabled"]
                or any(attrs.get(k) != v for k, v in change["attributes"].items())
            ):
                problems.append(f"{item['id']} does not carry the new values")
        after = page["paging"]["cursors"].get("after")
        if after is None:
            break
    missing = wanted.keys() - seen
    problems.extend(f"{workload_id} not listed" for workload_id in sorted(missing))
    return len(seen), problems


@dataclass
class DemoOutcome:
    """What the demo's run did, and what verifying it through the API found."""

    result: RunResult
    source: Path
    #: workloads listed back through GET
    checked: int
    #: one line per workload that does not carry the migration's values
    problems: list[str]


def write_input(folder: Path) -> Path:
    """Write the demo's migration to ``folder`` (and forget any earlier ledger); return its path."""
    source = folder / "workloads.csv"
    source.write_text(migration_csv(), encoding="utf-8")
    Path(f"{source}.ledger.jsonl").unlink(missing_ok=True)
    return source


async def run_demo(
    source: Path,
    execute: Callable[[Run], Awaitable[RunResult]],
    announce: Callable[[str, MockConfig, Path], None],
) -> DemoOutcome:
    """Serve the mock, run the sample migration through ``execute``, then verify it via GET.

    ``announce`` is told the mock's URL, its faults and the input before the run starts;
    ``execute`` runs the ``Run`` (the CLI wraps it in its progress display).
    """
    config = demo_mock_config()
    async with MockServer(config) as server:
        announce(server.url, config, source)
        options = RunOptions(
            input=str(source),
            base_url=server.url,
            concurrency=16,
            client_id=config.client_id,
            client_secret=config.client_secret,
        )
        result = await execute(Run(options))
        async with AiohttpTransport(limit=2, timeout=10) as transport:
            auth = ClientCredentials(
                transport, token_url_for(server.url), config.client_id, config.client_secret
            )
            checked, problems = await verify(transport, server.url, await auth.header() or "")
    return DemoOutcome(result, source, checked, problems)
