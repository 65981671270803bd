"""The nightly sync, measured: how fast unchanged rows pass, and what --state costs.

    python bench/nightly.py              # 200k rows
    python bench/nightly.py --huge       # 1M rows (issue 11's target)

Against a 204 server on 127.0.0.1 (bench/server.py in its own process):

* night 1: every row new. ``run --state`` against the same run with no memory at all (the
  memory switched off in the benchmark's own process: the product has no such switch), fresh
  ledger and memory each, alternating, median of the rounds: the cost of the always-on memory;
* night 2: the same rows from a new export (another file, so no ledger to resume from) with 1%
  of them changed: requests sent, rows/s over the whole run, how fast the unchanged rows pass
  (the run's time less the time the sends would take at night 1's rate), and peak RSS.

Figures come from the ledger's own end record (the run's elapsed time, requests, counts).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import measure, python_server

CONCURRENCY = 64


def make_export(path: Path, rows: int, changed_every: int = 0) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["workload_id", "name", "attributes.site", "enabled"])
        for i in range(rows):
            name = f"host-{i:07d}.corp.example"
            if changed_every and i % changed_every == 0:
                name += ".moved"
            writer.writerow([str(uuid.UUID(int=i)), name, "fra2", "true"])
    return path


def run(source: Path, base: str, ledger: Path, state: Path | None) -> tuple[dict[str, object], float]:
    """One ``bulkpatch run``; its ledger's end record, and its peak RSS (MB)."""
    ledger.unlink(missing_ok=True)
    start = ["-m", "bulkpatch"] if state is not None else ["-c", _NO_MEMORY]
    command = [
        sys.executable, *start, "run", str(source), "--base-url", base, "--quiet",
        "--concurrency", str(CONCURRENCY), "--ledger", str(ledger),
    ]  # fmt: skip
    if state is not None:
        command += ["--state", str(state)]
    _, _, rss = measure(command)
    return _end_record(ledger), rss


#: ``bulkpatch`` with no memory: the baseline that shows what the memory costs
_NO_MEMORY = (
    "import sys, bulkpatch.options as o; o.RunOptions.memory_path = property(lambda self: None);"
    " from bulkpatch.cli.main import main; sys.argv[0] = 'bulkpatch'; main()"
)


def _end_record(ledger: Path) -> dict[str, object]:
    """The run's end record, from the ledger's tail. (Reading the whole ledger would grow this
    process, and the next run, forked from it, would inherit the high-water mark: ru_maxrss
    survives exec.)"""
    with open(ledger, "rb") as f:
        f.seek(max(0, f.seek(0, 2) - (1 << 16)))
        tail = f.read().splitlines()[1:]
    return [r for r in map(orjson.loads, tail) if r.get("event") == "end"][-1]  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--huge", action="store_true", help="1,000,000 rows instead of 200,000")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = 1_000_000 if args.huge else 200_000
    with tempfile.TemporaryDirectory(prefix="bulkpatch-nightly-") as tmp:
        work = Path(tmp)
        night1 = make_export(work / "export-night1.csv", rows)
        night2 = make_export(work / "export-night2.csv", rows, changed_every=100)
        with python_server() as base:
            plain, kept = [], []
            for _ in range(args.rounds):
                end, _ = run(night1, base, work / "plain.ledger.jsonl", None)
                plain.append(rows / float(end["elapsed_s"]))  # type: ignore[arg-type]
                (work / "state.db").unlink(missing_ok=True)
                end, rss1 = run(night1, base, work / "night1.ledger.jsonl", work / "state.db")
                kept.append(rows / float(end["elapsed_s"]))  # type: ignore[arg-type]
            send_rate = statistics.median(kept)
            end, rss2 = run(night2, base, work / "night2.ledger.jsonl", work / "state.db")
        elapsed = float(end["elapsed_s"])  # type: ignore[arg-type]
        sent, unchanged = int(end["requests"]), int(end["unchanged"])  # type: ignore[call-overload]
        passing = max(elapsed - sent / send_rate, 1e-9)
        print(
            f"rows: {rows:,}; concurrency {CONCURRENCY}; 204 server: bench/server.py; rounds: {args.rounds}"
        )
        print(
            f"night 1, every row new: no memory {statistics.median(plain):,.0f} rows/s,"
            f" with the memory (--state) {send_rate:,.0f} rows/s"
            f" ({send_rate / statistics.median(plain):.0%}); peak RSS {rss1:.1f} MB"
        )
        print(
            f"night 2, 1% changed: {sent:,} requests, {unchanged:,} unchanged, {elapsed:.1f} s"
            f" ({rows / elapsed:,.0f} rows/s over the run; unchanged rows pass at"
            f" ~{unchanged / passing:,.0f}/s); peak RSS {rss2:.1f} MB"
        )


if __name__ == "__main__":
    main()
