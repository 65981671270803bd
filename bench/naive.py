"""The baseline: the ten-line script a user could write instead of using bulkpatch.

aiohttp session + asyncio.Semaphore(64) + asyncio.gather over all rows; no retries, no ledger,
no validation. Prints one JSON line: rows, ok, elapsed seconds (measured around the requests).

    python bench/naive.py INPUT.csv BASE_URL [CONCURRENCY]
"""

import asyncio
import csv
import json
import sys
import time

import aiohttp


async def main(path: str, base: str, concurrency: int) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def patch(row: dict[str, str]) -> None:
            nonlocal ok
            body = {"name": row["name"], "attributes": {"site": row["attributes.site"]}}
            async with sem:
                url = f"{base}/api/workload_management/v5/workloads/{row['workload_id']}"
                async with session.patch(url, json=body) as resp:
                    await resp.read()
                    ok += resp.status < 300

        started = time.perf_counter()
        await asyncio.gather(*(patch(row) for row in rows))
        elapsed = time.perf_counter() - started
    print(json.dumps({"rows": len(rows), "ok": ok, "elapsed": elapsed}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 64))
