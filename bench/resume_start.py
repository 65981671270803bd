"""Resume start-up: a run started over a finished 1M-row ledger, to its first request.

    python bench/resume_start.py                  # 1,000,000 rows, 3 rounds, with and without --state
    python bench/resume_start.py --rows 200000 --rounds 5

Once: a 204 server on a fixed port (nginx when installed, else bench/server.py) takes a whole run
of the input, one with a ledger only and one with ``--state`` (and a ledger of its own). Then that
server stops and a recording server takes its port (the base URL is part of every request's
identity, so it must not change): the last row of the input is changed in place, and the same
command runs again. What is timed is from spawning the process to the arrival of its first (and
only) request: the start-up, and everything a resume does before it may send (reading the ledger
or the state, passing over the 999,999 rows already applied). Median of the rounds; each round
changes the last row once more.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import startup
from run import free_port, make_input, measure, nginx_server, serving


def fixed_port_server(workdir: Path, port: int) -> object:
    if shutil.which("nginx"):
        return nginx_server(workdir, port)
    here = Path(__file__).resolve().parent
    return serving([sys.executable, str(here / "server.py"), str(port)], port)


def change_last_row(source: Path, round_no: int) -> None:
    """Rewrite the input's last row in place with another name."""
    with open(source, "rb+") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(0, end - 4096))
        tail = f.read()
        start = end - len(tail) + tail.rstrip(b"\n").rfind(b"\n") + 1
        f.seek(start)
        last = f.read().decode().rstrip("\n").split(",")
        last[1] = f"changed-{round_no}.corp.example"
        f.seek(start)
        f.truncate()
        f.write((",".join(last) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bulkpatch-resume-") as tmp:
        work = Path(tmp)
        source = make_input(work / "rows.csv", args.rows)
        cases = {
            "ledger": ["--ledger", str(work / "plain.ledger.jsonl")],
            "--state": ["--ledger", str(work / "state.ledger.jsonl"), "--state", str(work / "state.db")],
        }
        with fixed_port_server(work, port):  # type: ignore[attr-defined]
            for name, extra in cases.items():
                command = [
                    sys.executable, "-m", "bulkpatch", "run", str(source), "--base-url", base,
                    "--concurrency", "64", "--quiet", *extra,
                ]  # fmt: skip
                _, wall, _ = measure(command)
                print(f"first run, {name}: {args.rows:,} rows in {wall:.1f} s")
        recorder = startup.recording_server(port)
        try:
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for round_no in range(args.rounds):
                for name, extra in cases.items():
                    change_last_row(source, round_no * len(cases) + len(samples[name]))
                    command = [
                        sys.executable, "-m", "bulkpatch", "run", str(source), "--base-url", base,
                        "--concurrency", "64", "--quiet", *extra,
                    ]  # fmt: skip
                    samples[name].append(startup.first_request(command))
        finally:
            recorder.shutdown()
    for name, seconds in samples.items():
        ms = sorted(s * 1000 for s in seconds)
        print(
            f"resume over {args.rows:,} applied rows ({name}), last row changed: first request after"
            f" median {statistics.median(ms):,.0f} ms (min {ms[0]:,.0f}, max {ms[-1]:,.0f}, {len(ms)} rounds)"
        )


if __name__ == "__main__":
    main()
