"""Peak memory of ``bulkpatch export`` listing 1M workloads from the mock (target: 80 MB or less).

The mock runs in a process of its own, seeded with N workloads; its store pages through an
index (the stock store sorts every id on each page, which is fine for tests and far too slow
for a million). The client is ``bulkpatch export`` in a second process; its peak RSS is the
``ru_maxrss`` that ``wait4`` reports for it alone.

    python bench/export_rss.py                    # 1,000,000 workloads, CSV
    python bench/export_rss.py --workloads 200000 --format jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENT = """
import sys
from bulkpatch.cli.main import _Group
from bulkpatch.cli.operations import export
_Group(commands={"export": export}).main(["export", *sys.argv[1:]], prog_name="bulkpatch")
"""


def serve(workloads: int, port: int) -> None:
    from bulkpatch.mock import MockConfig, MockServer
    from bulkpatch.mock.store import WorkloadStore, sample_workloads

    async def main() -> None:
        server = MockServer(MockConfig(require_auth=False, workloads=0), port=port)
        server.api.store = WorkloadStore(sample_workloads(workloads))  # pages by a sorted index
        await server.serve_until_stopped(ready=lambda: print("ready", flush=True))

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(workloads: int, fmt: str, page_size: int) -> None:
    port = free_port()
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(workloads), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        if server.stdout is None or server.stdout.readline().strip() != "ready":
            raise SystemExit("the mock did not start")
        print(f"mock seeded with {workloads:,} workloads in {time.monotonic() - started:.0f} s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"workloads.{fmt}"
            args = ["--base-url", f"http://127.0.0.1:{port}", "-o", str(out), "--page-size", str(page_size)]
            started = time.monotonic()
            client = subprocess.Popen([sys.executable, "-c", CLIENT, *args])
            _, status, usage = os.wait4(client.pid, 0)
            seconds = time.monotonic() - started
            rows = sum(1 for _ in out.open("rb")) - (fmt == "csv") if out.exists() else 0
            size = out.stat().st_size if out.exists() else 0
        code = os.waitstatus_to_exitcode(status)
        peak = usage.ru_maxrss / 1024  # kilobytes on Linux
        print(
            f"export --format {fmt}: exit {code}, {rows:,} rows, {size / 1e6:,.0f} MB written in"
            f" {seconds:,.1f} s ({rows / seconds:,.0f} rows/s); client peak RSS {peak:.1f} MB"
        )
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--serve", nargs=2, type=int, metavar=("N", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
    else:
        measure(args.workloads, args.format, args.page_size)
