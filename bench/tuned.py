"""A hand-tuned worker pool: the ceiling of aiohttp itself on this machine, for reference.

64 workers pulling from one shared iterator over the CSV, on uvloop when installed; no retries, no
ledger, no validation. Prints one JSON line: rows, ok, elapsed seconds (around the requests).

    python bench/tuned.py INPUT.csv BASE_URL [CONCURRENCY]
"""

import asyncio
import csv
import json
import sys
import time

import aiohttp


async def main(path: str, base: str, concurrency: int) -> None:
    ok = rows = 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def worker() -> None:
                nonlocal ok, rows
                for row in reader:
                    body = json.dumps({"name": row["name"], "attributes": {"site": row["attributes.site"]}})
                    url = f"{base}/api/workload_management/v5/workloads/{row['workload_id']}"
                    headers = {"Content-Type": "application/json"}
                    async with session.patch(url, data=body.encode(), headers=headers) as resp:
                        await resp.read()
                        rows += 1
                        ok += resp.status < 300

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
    print(json.dumps({"rows": rows, "ok": ok, "elapsed": elapsed}))


if __name__ == "__main__":
    try:
        from uvloop import run
    except ImportError:
        from asyncio import run
    run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 64))
