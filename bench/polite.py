"""How polite bulkpatch is to a rate-limited API, next to a plain retrying client.

    python bench/polite.py

Against ``bulkpatch mock`` in its own process on 127.0.0.1:

1. ``--rate 200 --concurrency 64``, 1,000 rows, no server limit: wall time and the busiest
   one-second window of arrivals at the server (the cap promises at most 200 + a small burst);
2. a server that allows 300 requests/s and answers 429 + ``Retry-After: 1`` above it; 3,000 rows
   at concurrency 64, no ``--rate``: bulkpatch, then a plain retrying client (aiohttp +
   Semaphore(64) + gather, each request retried up to 10 times, sleeping what its own
   Retry-After says). Rows ok and the share of 429s among all requests, for each.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bulkpatch.mock.app import busiest_window
from bulkpatch.mock.store import sample_workloads

API = "/api/workload_management/v5/workloads"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mock(*extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "bulkpatch", "mock", "--port", str(port), "--no-auth"]
    proc = subprocess.Popen([*command, "--workloads", "3000", *extra], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.02)
    raise RuntimeError("the mock did not start")


def get_json(url: str) -> object:
    with urllib.request.urlopen(url) as resp:
        return json.loads(resp.read())


def bulkpatch_run(source: Path, base: str, *extra: str) -> float:
    ledger = f"{source}.ledger.jsonl"
    if os.path.exists(ledger):
        os.remove(ledger)
    started = time.perf_counter()
    command = [sys.executable, "-m", "bulkpatch", "run", str(source), "--base-url", base, "--quiet"]
    subprocess.run([*command, "--concurrency", "64", *extra], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


async def plain_retrying_client(source: Path, base: str) -> int:
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    sem = asyncio.Semaphore(64)
    ok = 0
    async with aiohttp.ClientSession() as session:

        async def patch(row: dict[str, str]) -> None:
            nonlocal ok
            async with sem:
                for attempt in range(10):
                    url = f"{base}{API}/{row['workload_id']}"
                    async with session.patch(url, json={"name": row["name"]}) as resp:
                        await resp.read()
                        if resp.status < 300:
                            ok += 1
                            return
                        delay = float(resp.headers.get("Retry-After", 0.5 * 2**attempt))
                    await asyncio.sleep(delay)

        await asyncio.gather(*(patch(row) for row in rows))
    return ok


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bulkpatch-polite-") as tmp:
        source = Path(tmp) / "fleet.csv"
        with open(source, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["workload_id", "name"])
            for i, w in enumerate(sample_workloads(3000)):
                writer.writerow([w["id"], f"renamed-{i}"])
        small = Path(tmp) / "fleet-1000.csv"
        small.write_text("".join(source.read_text().splitlines(keepends=True)[:1001]))

        proc, base = start_mock()
        try:
            wall = bulkpatch_run(small, base, "--rate", "200")
            arrivals = get_json(f"{base}/__mock__/arrivals")
            assert isinstance(arrivals, list)
            print(f"--rate 200, 1,000 rows: wall {wall:.2f} s, busiest 1 s window at the server: "
                  f"{busiest_window(arrivals)} requests")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(10)

        for name in ("bulkpatch", "plain retrying client"):
            proc, base = start_mock("--rate-limit", "300", "--retry-after", "1")
            try:
                started = time.perf_counter()
                if name == "bulkpatch":
                    bulkpatch_run(source, base)
                    with open(f"{source}.ledger.jsonl") as ledger:
                        ok = sum(1 for line in ledger if '"status":"ok"' in line)
                else:
                    ok = asyncio.run(plain_retrying_client(source, base))
                wall = time.perf_counter() - started
                stats = get_json(f"{base}/__mock__/stats")
                assert isinstance(stats, dict)
                n429 = stats["by_status"].get("429", 0)
                print(f"300 req/s server, 3,000 rows, {name}: {ok:,} ok, {stats['requests']:,} requests, "
                      f"{n429:,} 429s = {n429 / stats['requests']:.1%}, {wall:.1f} s")  # fmt: skip
            finally:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
