"""Start-up: from starting ``bulkpatch run`` to its first request arriving at a local server.

    python bench/startup.py               # median of 11, a 100-row input
    python bench/startup.py --runs 21 -- --state s.db   # extra arguments for the run

A small HTTP server in this process (a thread) answers 204 and notes when each run's first request
arrives; the time counted is from just before the process is spawned to that arrival, so the
interpreter's own start, the imports, reading the options, opening input and ledger and the
first connection are all in it. ``python -X importtime -c 'import bulkpatch.engine.run'`` tells
where the import part goes.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import fresh, make_input

_first: list[float] = []
_arrived = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        if not _arrived.is_set():
            _first.append(time.perf_counter())
            _arrived.set()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(204)
        self.end_headers()

    do_PATCH = do_POST = do_PUT = do_GET = _answer  # noqa: N815 (http.server's names)

    def log_message(self, *args: Any) -> None:
        return None


#: CPU seconds (user + system) of each process ``first_request`` ran, in order
cpu_seconds: list[float] = []


def first_request(command: list[str]) -> float:
    """Seconds from spawning ``command`` to the first request at the server (and its whole
    run's CPU time in ``cpu_seconds``: a figure a loaded machine stretches less)."""
    _arrived.clear()
    _first.clear()
    started = time.perf_counter()
    env = {**os.environ, "BULKPATCH_TOKEN": "bench"}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 or not _first:
            err.seek(0)
            raise RuntimeError(f"{command[:4]} exited {code}: {err.read().decode()[-2000:]}")
    cpu_seconds.append(usage.ru_utime + usage.ru_stime)
    return _first[0] - started


def recording_server(port: int = 0) -> http.server.ThreadingHTTPServer:
    """A 204 server in a thread that notes each run's first request (``first_request``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("extra", nargs="*", help="more arguments for bulkpatch run (after --)")
    args = parser.parse_args()
    server = recording_server()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="bulkpatch-startup-") as tmp:
        source = make_input(Path(tmp) / "rows.csv", args.rows)
        ledger = Path(tmp) / "rows.ledger.jsonl"
        samples = []
        for _ in range(args.runs):
            fresh(ledger)
            command = [
                sys.executable, "-m", "bulkpatch", "run", str(source), "--base-url", base,
                "--ledger", str(ledger), "--quiet", *args.extra,
            ]  # fmt: skip
            samples.append(first_request(command))
    server.shutdown()
    ms = sorted(s * 1000 for s in samples)
    print(
        f"bulkpatch run, process start to first request: median {statistics.median(ms):.0f} ms"
        f" (min {ms[0]:.0f}, max {ms[-1]:.0f}, {args.runs} runs; {os.cpu_count()} cores, shared);"
        f" CPU of the whole process: median {statistics.median(cpu_seconds) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
