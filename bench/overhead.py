"""bulkpatch's own work per row: the whole pipeline against a transport that answers at once.

    python bench/overhead.py                   # 200k rows, median of 5, µs per row
    python bench/overhead.py --rows 50000 --profile   # and the top of cProfile (cumulative)

No socket, no server: the CSV is read, validated, mapped, fingerprinted, kept in key order,
paced, sent to a transport whose ``send`` returns a 204 at once, and recorded in a real ledger
file. What is left per row is bulkpatch's share of a request's cost (aiohttp and the event loop
add ~70 µs per request on top, measured by ``run.py``). uvloop is used when it is installed.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import fresh, make_input

import bulkpatch
from bulkpatch.event_loop import run_loop
from bulkpatch.http.transport import Response

_ANSWER = Response(204)


class Instant:
    """A transport that answers 204 without a socket (and without keeping the requests)."""

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None = None
    ) -> Response:
        return _ANSWER

    async def close(self) -> None:
        return None


def once(source: Path, ledger: Path, concurrency: int) -> tuple[float, float]:
    """One run; (µs of wall time per row, µs of CPU per row), while sending."""
    fresh(ledger)
    result = run_loop(
        bulkpatch.run_async(
            str(source),
            base_url="http://bench.invalid",
            ledger=str(ledger),
            concurrency=concurrency,
            transport=Instant(),
        )
    )
    rows = result.rows_read
    assert rows, result
    # The run's own timers: the sending only, as run.py's throughput (not the start-up).
    return result.elapsed / rows * 1e6, result.cpu_s / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="one round under cProfile instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulkpatch-overhead-") as tmp:
        source = make_input(Path(tmp) / "rows.csv", args.rows)
        ledger = Path(tmp) / "rows.ledger.jsonl"
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            once(source, ledger, args.concurrency)
            profiler.disable()
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(30)
            return
        once(source, ledger, args.concurrency)  # warm the page cache and the imports
        samples = [once(source, ledger, args.concurrency) for _ in range(args.rounds)]
    wall = statistics.median(s[0] for s in samples)
    cpu = statistics.median(s[1] for s in samples)
    print(
        f"{args.rows:,} rows, concurrency {args.concurrency}, median of {args.rounds}: "
        f"{wall:.2f} µs per row (wall), {cpu:.2f} µs CPU ({os.cpu_count()} cores, shared)"
    )


if __name__ == "__main__":
    main()
