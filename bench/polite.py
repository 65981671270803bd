"""How polite bulkpatch is to a rate-limited API, next to a plain retrying client.

    python bench/polite.py

Against ``bulkpatch mock`` in its own process on 127.0.0.1:

1. ``--rate 200 --concurrency 64``, 1,000 rows, no server limit: wall time and the busiest
   one-second window of arrivals at the server (the cap promises at most 200 + a small burst);
2. a server that allows 300 requests/s and answers 429 + ``Retry-After: 1`` above it; 3,000 rows
   at concurrency 64, no ``--rate``: bulkpatch, then a plain retrying client (aiohttp +
   Semaphore(64) + gather, each request retried up to 10 times, sleeping what its own
   Retry-After says). Rows ok and the share of 429s among all requests, for each.

And against a server of its own (this file, in a process of its own) whose faults are per row,
not load (issue #12), 50 ms a request, no rate limit:

3. 2,000 rows: 10% of ids answer 503 twice then 204, 5% 429 + ``Retry-After: 1`` once, 3% drop
   the connection once, 2% answer after 3 s (beyond ``--timeout 2``) once, 5% always 404 or
   400. ``bulkpatch run --concurrency 32 --max-attempts 5 --timeout 2`` against a plain
   retrying script (aiohttp, Semaphore(32), 5 attempts, per-row exponential backoff with full
   jitter, each 429 waiting its own Retry-After): wall time, requests, final outcomes.

4. ``announced``: the same 300 req/s limit, now announced in every answer (``bulkpatch mock
   --announce-rate-limit ietf|legacy|x``, fixed one-second windows): bulkpatch with and without
   ``--processes 2``, per header form: 429s and the rate reached (no 429 is needed to find it).

``--scenario rate|limited|sporadic|announced`` runs one of them; ``--rounds N`` repeats the
third and the fourth.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiohttp import web

from bulkpatch.mock.app import busiest_window
from bulkpatch.mock.store import sample_workloads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import fresh

API = "/api/workload_management/v5/workloads"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mock(*extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "bulkpatch", "mock", "--port", str(port), "--no-auth"]
    proc = subprocess.Popen([*command, "--workloads", "3000", *extra], stdout=subprocess.DEVNULL)
    return proc, listening(port, "the mock")


def listening(port: int, what: str) -> str:
    """The URL of a server of ours once it accepts connections on ``port``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}"
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not start")


def get_json(url: str) -> object:
    with urllib.request.urlopen(url) as resp:
        return json.loads(resp.read())


def bulkpatch_run(source: Path, base: str, *extra: str, concurrency: int = 64) -> float:
    fresh(f"{source}.ledger.jsonl")
    started = time.perf_counter()
    command = [sys.executable, "-m", "bulkpatch", "run", str(source), "--base-url", base, "--quiet"]
    command += ["--concurrency", str(concurrency), *extra]
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL)  # exit 1: some rows failed
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


# Faults per row, named by the id's prefix, as in tests/test_faults.py.
SPORADIC_KINDS = ["503x2"] * 10 + ["429"] * 5 + ["drop"] * 3 + ["slow"] * 2 + ["404"] * 3 + ["400"] * 2
SPORADIC_KINDS += ["fine"] * (100 - len(SPORADIC_KINDS))


def serve_sporadic(port: int, latency: float = 0.05) -> None:
    """The sporadic-faults server; ``GET /__stats__`` gives the requests it saw."""
    seen: dict[str, int] = {}
    requests = 0

    async def patch(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        requests += 1
        wid = request.match_info["wid"]
        n = seen[wid] = seen.get(wid, 0) + 1
        kind = wid.split("-")[0]
        await request.read()
        await asyncio.sleep(latency)
        if kind == "503x2" and n <= 2:
            return web.json_response({"error": {"code": "Busy"}}, status=503)
        if kind == "429" and n == 1:
            return web.json_response({"error": {"code": "Slow"}}, status=429, headers={"Retry-After": "1"})
        if kind == "drop" and n == 1 and request.transport is not None:
            request.transport.close()
            return web.Response(status=204)
        if kind == "slow" and n == 1:
            await asyncio.sleep(3.0)
        if kind in ("404", "400"):
            return web.json_response({"error": {"code": "Nope"}}, status=int(kind))
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.StreamResponse:
        return web.json_response({"requests": requests})

    app = web.Application()
    app.router.add_patch(API + "/{wid}", patch)
    app.router.add_get("/__stats__", stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_sporadic() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-sporadic", str(port)])
    return proc, listening(port, "the sporadic-faults server")


async def plain_retrying_script(source: Path, base: str) -> dict[str, str]:
    """What a user would write: Semaphore(32), 5 attempts, full-jitter backoff, Retry-After."""
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    sem = asyncio.Semaphore(32)
    outcome: dict[str, str] = {}
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def patch(row: dict[str, str]) -> None:
            wid = row["workload_id"]
            async with sem:
                for attempt in range(5):
                    delay = random.uniform(0, min(30.0, 0.5 * 2**attempt))
                    try:
                        async with session.patch(f"{base}{API}/{wid}", json={"name": row["name"]}) as resp:
                            await resp.read()
                            if resp.status < 300:
                                outcome[wid] = "ok"
                                return
                            if resp.status not in (408, 425, 429, 500, 502, 503, 504):
                                outcome[wid] = "failed"
                                return
                            if "Retry-After" in resp.headers:
                                delay = float(resp.headers["Retry-After"])
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                    if attempt < 4:
                        await asyncio.sleep(delay)
                outcome[wid] = "failed"

        await asyncio.gather(*(patch(row) for row in rows))
    return outcome


def sporadic(tmp: str, rounds: int) -> None:
    rng = random.Random(12)
    source = Path(tmp) / "sporadic.csv"
    with open(source, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["workload_id", "name"])
        for i in range(2000):
            writer.writerow([f"{rng.choice(SPORADIC_KINDS)}-{i}", f"renamed-{i}"])
    for _ in range(rounds):
        figures = {}
        for name in ("plain retrying script", "bulkpatch"):
            proc, base = start_sporadic()
            try:
                if name == "bulkpatch":
                    flags = ("--max-attempts", "5", "--timeout", "2")
                    wall = bulkpatch_run(source, base, *flags, concurrency=32)
                    outcome = {}
                    with open(f"{source}.ledger.jsonl") as ledger:
                        for line in ledger:
                            record = json.loads(line)
                            if record.get("type") == "row":
                                outcome[record["key"]] = record["status"]
                else:
                    started = time.perf_counter()
                    outcome = asyncio.run(plain_retrying_script(source, base))
                    wall = time.perf_counter() - started
                stats = get_json(f"{base}/__stats__")
                assert isinstance(stats, dict)
            finally:
                proc.terminate()
                proc.wait(10)
            figures[name] = (wall, stats["requests"], outcome)
            ok = sum(1 for s in outcome.values() if s == "ok")
            print(f"sporadic faults, 2,000 rows, {name}: wall {wall:.1f} s, {stats['requests']:,} requests, "
                  f"{ok:,} ok, {len(outcome) - ok:,} failed")  # fmt: skip
        (pw, pr, po), (bw, br, bo) = figures["plain retrying script"], figures["bulkpatch"]
        print(f"  bulkpatch / script: wall {bw / pw:.2f}x, requests {br / pr:.3f}x, "
              f"same outcomes: {po == bo}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--scenario", choices=["all", "rate", "limited", "sporadic", "announced"], default="all"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--serve-sporadic", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sporadic:
        serve_sporadic(args.serve_sporadic)
        return
    with tempfile.TemporaryDirectory(prefix="bulkpatch-polite-") as tmp:
        if args.scenario in ("all", "rate", "limited"):
            limited(tmp, args.scenario)
        if args.scenario in ("all", "sporadic"):
            sporadic(tmp, args.rounds)
        if args.scenario in ("all", "announced"):
            announced(tmp, args.rounds)


def announced(tmp: str, rounds: int) -> None:
    source = fleet(tmp)
    for form in ("ietf", "legacy", "x"):
        for processes in ("1", "2"):
            for _ in range(rounds):
                proc, base = start_mock("--rate-limit", "300", "--announce-rate-limit", form)
                try:
                    wall = bulkpatch_run(source, base, "--processes", processes)
                    ok = _ok_rows(source)
                    print(
                        f"announced ({form}), --processes {processes}: {_server_view(base, ok)}, {wall:.1f} s"
                    )
                finally:
                    proc.terminate()
                    proc.wait(10)


def fleet(tmp: str) -> Path:
    """3,000 rows renaming the mock's 3,000 workloads."""
    source = Path(tmp) / "fleet.csv"
    if not source.exists():
        with open(source, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["workload_id", "name"])
            for i, w in enumerate(sample_workloads(3000)):
                writer.writerow([w["id"], f"renamed-{i}"])
    return source


def _ok_rows(source: Path) -> int:
    with open(f"{source}.ledger.jsonl") as ledger:
        return sum(1 for line in ledger if '"status":"ok"' in line)


def _server_view(base: str, ok: int) -> str:
    stats = get_json(f"{base}/__mock__/stats")
    arrivals = get_json(f"{base}/__mock__/arrivals")
    assert isinstance(stats, dict)
    assert isinstance(arrivals, list)
    n429 = stats["by_status"].get("429", 0)
    # The rate achieved: rows applied over the time the server saw requests arrive.
    achieved = ok / (arrivals[-1] - arrivals[0])
    return (
        f"{ok:,} ok, {stats['requests']:,} requests, {n429:,} 429s = {n429 / stats['requests']:.2%},"
        f" {achieved:.0f} rows/s = {achieved / 300:.1%} of 300"
    )


def limited(tmp: str, scenario: str) -> None:
    source = fleet(tmp)
    if scenario in ("all", "rate"):
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
    if scenario not in ("all", "limited"):
        return
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
            arrivals = get_json(f"{base}/__mock__/arrivals")
            assert isinstance(stats, dict)
            assert isinstance(arrivals, list)
            n429 = stats["by_status"].get("429", 0)
            # The rate achieved: rows applied over the time the server saw requests arrive.
            achieved = ok / (arrivals[-1] - arrivals[0])
            print(f"300 req/s server, 3,000 rows, {name}: {ok:,} ok, {stats['requests']:,} requests, "
                  f"{n429:,} 429s = {n429 / stats['requests']:.1%}, {wall:.1f} s, "
                  f"{achieved:.0f} rows/s = {achieved / 300:.0%} of 300")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
