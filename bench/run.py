"""bulkpatch against a hand-written aiohttp script, on one machine, in one run.

    python bench/run.py                 # 20k and 200k rows, 5 rounds each
    python bench/run.py --huge          # also 1M rows (peak RSS)
    python bench/run.py --rounds 3

Starts a fast 204 server on 127.0.0.1 (nginx when it is installed, else bench/server.py in its
own process, and says which), generates inputs, then measures, alternating the contenders and
taking the median of the rounds:

* throughput, 20k rows, concurrency 64: bulkpatch ``run`` (ledger on, workload schema on) vs
  bench/naive.py (aiohttp + Semaphore(64) + gather, no retries, no ledger); bulkpatch also with
  ``--processes 2`` (two worker processes send, this machine's two cores);
* peak RSS of each at 20k and 200k rows (and 1M with --huge), all processes together;
* the cost of the ledger (bulkpatch with ``--ledger /dev/null``);
* a latency-bound case: a server adding 20 ms per request, concurrency 64, against its ceiling
  of concurrency / latency.

Throughput is rows / seconds as each contender's own timer measures the sending (process start-up
and, for the naive script, reading its whole input first, are outside); wall time is shown too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONCURRENCY = 64


@dataclass
class Sample:
    rows_per_s: float
    wall_s: float
    rss_mb: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def serving(command: list[str], port: int) -> Iterator[str]:
    """Run a server process for the duration of the block; yield its base URL."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def nginx_server(workdir: Path, port: int | None = None) -> Any:
    port = port or free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {workdir}/nginx-body;
    server {{ listen 127.0.0.1:{port}; location / {{ return 204; }} }}
}}
"""
    )
    return serving(["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"], port)


def python_server(delay_ms: float = 0.0) -> Any:
    port = free_port()
    return serving([sys.executable, str(HERE / "server.py"), str(port), "--delay-ms", str(delay_ms)], port)


def make_input(path: Path, rows: int) -> Path:
    if path.exists():
        return path
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["workload_id", "name", "attributes.site", "enabled"])
        for i in range(rows):
            writer.writerow([str(uuid.UUID(int=i)), f"host-{i:07d}.corp.example", "fra2", "true"])
    return path


def measure(command: list[str]) -> tuple[str, float, float]:
    """Run ``command``; return its stdout, wall seconds and peak RSS in MB.

    Peak RSS is the process's own (wait4), or, when it has worker processes, the largest sum of
    the whole process tree seen by sampling /proc every 50 ms, whichever is larger.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        tree_peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, _tree_rss_kb(proc.pid))
            time.sleep(0.05)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{command[:3]} exited {proc.returncode}: {err.read().decode()[-2000:]}")
        return out.read().decode(), wall, max(usage.ru_maxrss, tree_peak) / 1024.0


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its children, in KiB (0 where /proc cannot tell)."""
    total = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for each in [str(pid), *children]:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return total


def run_script(script: str, source: Path, base: str) -> Sample:
    out, wall, rss = measure([sys.executable, str(HERE / script), str(source), base, str(CONCURRENCY)])
    data = json.loads(out)
    assert data["ok"] == data["rows"], data
    return Sample(data["rows"] / data["elapsed"], wall, rss)


def fresh(ledger: str | os.PathLike[str]) -> None:
    """Start the next run as a first run: no ledger, and no memory beside it (which would prove
    every row applied and send nothing)."""
    folder = os.path.dirname(os.fspath(ledger))
    for path in (
        os.fspath(ledger),
        *(os.path.join(folder, "bulkpatch-memory.db" + s) for s in ("", "-wal", "-shm")),
    ):
        if os.path.isfile(path):
            os.remove(path)


def run_bulkpatch(source: Path, base: str, *, ledger: str | None = None, processes: int = 1) -> Sample:
    ledger_path = ledger or f"{source}.ledger.jsonl"
    if ledger is None:
        fresh(ledger_path)
    command = [
        sys.executable, "-m", "bulkpatch", "run", str(source), "--base-url", base,
        "--concurrency", str(CONCURRENCY), "--quiet", "--ledger", ledger_path,
        "--processes", str(processes),
    ]  # fmt: skip
    out, wall, rss = measure(command)
    rows, elapsed = _rows_and_elapsed(out)
    return Sample(rows / elapsed, wall, rss)


def _rows_and_elapsed(summary: str) -> tuple[int, float]:
    # "requests sent: 20,000 for 20,000 rows (11,421 rows/s); ..." and "finished in 0:00:01":
    # the rows/s figure is the run's own (sending only); rows come from the same line.
    for line in summary.splitlines():
        if line.startswith("requests sent:"):
            rows = int(line.split(" for ")[1].split(" rows")[0].replace(",", ""))
            rate = float(line.split("(")[1].split(" rows/s")[0].replace(",", ""))
            return rows, rows / rate
    raise RuntimeError(f"no summary in bulkpatch output:\n{summary}")


def median(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.rows_per_s for s in samples),
        statistics.median(s.wall_s for s in samples),
        statistics.median(s.rss_mb for s in samples),
    )


def quick_report(
    naive: list[Sample], tuned: list[Sample], ours: list[Sample], two: list[Sample], no_ledger: list[Sample]
) -> None:
    n, t, o, o2, nl = (median(x) for x in (naive, tuned, ours, two, no_ledger))
    for name, sample in (
        ("naive script", n),
        ("hand-tuned pool", t),
        ("bulkpatch", o),
        ("bulkpatch --processes 2", o2),
        ("bulkpatch --ledger /dev/null", nl),
    ):
        print(f"20k rows, {name:<30} {sample.rows_per_s:>9,.0f} rows/s {sample.rss_mb:>7.1f} MB")
    print(
        f"bulkpatch: {o.rows_per_s / t.rows_per_s:.0%} of the pool, {o.rows_per_s / n.rows_per_s:.2f}x naive;"
        f" --processes 2: {o2.rows_per_s / n.rows_per_s:.2f}x naive"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--huge", action="store_true", help="also measure peak RSS at 1M rows")
    parser.add_argument("--quick", action="store_true", help="only the 20k-row throughput cases (a minute)")
    parser.add_argument(
        "--python-server", action="store_true", help="use bench/server.py even if nginx is installed"
    )
    args = parser.parse_args()

    use_nginx = shutil.which("nginx") is not None and not args.python_server
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "server": "nginx (return 204)" if use_nginx else "bench/server.py (uvloop, raw 204)",
    }
    try:
        import uvloop  # noqa: F401

        results["loop"] = "uvloop (bulkpatch[fast])"
    except ImportError:
        results["loop"] = "asyncio (uvloop not installed)"
    print(f"machine: {results['machine']}; server: {results['server']}; bulkpatch loop: {results['loop']}")

    with tempfile.TemporaryDirectory(prefix="bulkpatch-bench-") as tmp:
        work = Path(tmp)
        small = make_input(work / "rows-20k.csv", 20_000)
        large = make_input(work / "rows-200k.csv", 200_000)
        server = nginx_server(work) if use_nginx else python_server()
        with server as base:
            naive: list[Sample] = []
            tuned: list[Sample] = []
            ours: list[Sample] = []
            no_ledger: list[Sample] = []
            two: list[Sample] = []
            for _ in range(args.rounds):
                naive.append(run_script("naive.py", small, base))
                ours.append(run_bulkpatch(small, base))
                two.append(run_bulkpatch(small, base, processes=2))
                tuned.append(run_script("tuned.py", small, base))
                no_ledger.append(run_bulkpatch(small, base, ledger=os.devnull))
            if args.quick:
                quick_report(naive, tuned, ours, two, no_ledger)
                return
            naive_big_runs, ours_big_runs, two_big_runs = [], [], []
            for _ in range(args.rounds):
                naive_big_runs.append(run_script("naive.py", large, base))
                ours_big_runs.append(run_bulkpatch(large, base))
                two_big_runs.append(run_bulkpatch(large, base, processes=2))
            naive_big, ours_big, two_big = median(naive_big_runs), median(ours_big_runs), median(two_big_runs)
            huge = None
            if args.huge:
                huge = run_bulkpatch(make_input(work / "rows-1m.csv", 1_000_000), base)
        with python_server(delay_ms=20) as slow_base:
            latency_rows = make_input(work / "rows-10k.csv", 10_000)
            latency_ours: list[Sample] = []
            latency_tuned: list[Sample] = []
            for _ in range(args.rounds):
                latency_ours.append(run_bulkpatch(latency_rows, slow_base))
                latency_tuned.append(run_script("tuned.py", latency_rows, slow_base))
            latency, latency_ref = median(latency_ours), median(latency_tuned)

    n, o, nl, o2 = median(naive), median(ours), median(no_ledger), median(two)
    ceiling = CONCURRENCY / 0.020
    rows = [
        ("20k rows, naive script", n),
        ("20k rows, hand-tuned pool (reference)", median(tuned)),
        ("20k rows, bulkpatch", o),
        ("20k rows, bulkpatch --ledger /dev/null", nl),
        ("20k rows, bulkpatch --processes 2", o2),
        ("200k rows, naive script", naive_big),
        ("200k rows, bulkpatch", ours_big),
        ("200k rows, bulkpatch --processes 2", two_big),
    ]
    if huge is not None:
        rows.append(("1M rows, bulkpatch (one round)", huge))
    rows.append(("10k rows, 20 ms server, hand-tuned pool", latency_ref))
    rows.append(("10k rows, 20 ms server, bulkpatch", latency))
    print(f"\n{'case':<42} {'rows/s':>9} {'wall s':>8} {'peak RSS MB':>12}")
    for name, s in rows:
        print(f"{name:<42} {s.rows_per_s:>9,.0f} {s.wall_s:>8.2f} {s.rss_mb:>12.1f}")
    print(
        f"\nthroughput, bulkpatch / naive at 20k rows: {o.rows_per_s / n.rows_per_s:.2f}x"
        f" (--processes 2: {o2.rows_per_s / n.rows_per_s:.2f}x);"
        f" at 200k rows: {ours_big.rows_per_s / naive_big.rows_per_s:.2f}x"
        f" (--processes 2: {two_big.rows_per_s / naive_big.rows_per_s:.2f}x)"
    )
    print(f"ledger cost at 20k rows: {(1 - o.rows_per_s / nl.rows_per_s) * 100:.1f}% of throughput")
    print(
        f"peak RSS 200k - 20k rows: {ours_big.rss_mb - o.rss_mb:+.1f} MB"
        f" (naive: {naive_big.rss_mb - n.rss_mb:+.1f} MB)"
    )
    print(
        f"latency-bound: {latency.rows_per_s:,.0f} rows/s = {latency.rows_per_s / ceiling:.0%} of the"
        f" {ceiling:,.0f} ceiling (hand-tuned pool: {latency_ref.rows_per_s / ceiling:.0%})"
    )
    results.update(
        {name: vars(s) for name, s in rows}
        | {
            "ratio_20k": o.rows_per_s / n.rows_per_s,
            "ratio_20k_processes_2": o2.rows_per_s / n.rows_per_s,
            "rounds": args.rounds,
        }
    )
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
