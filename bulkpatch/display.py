"""What the operator sees: live progress while a run goes, and the summary after it.

Part of the CLI layer (with ``cli.py``): the only other module that touches rich and the terminal.
Progress is redrawn on a timer from counters the run keeps anyway, never per row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import stat
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bulkpatch.ledger import Status
from bulkpatch.pipeline import Run, RunResult
from bulkpatch.stats import Tally

#: seconds between status lines when stderr is not a terminal (cron, Kubernetes logs)
LOG_INTERVAL = 10.0
_RATE_WINDOW = 10.0


def count_rows(name: str, fmt: str) -> int | None:
    """Rows in a plain input file, counted by newlines (fast; multi-line CSV records overcount)."""
    if name == "-" or name.endswith(".gz"):
        return None
    try:
        if not stat.S_ISREG(os.stat(name).st_mode):
            return None  # a pipe or FIFO: reading it here would take rows away from the run
        with open(name, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                return None
            f.seek(0)
            lines, last = 0, b"\n"
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError:
        return None
    if last != b"\n":
        lines += 1
    return max(0, lines - 1) if fmt == "csv" else lines


class Progress:
    """Redraws a one-line status from a ``Run``'s counters; call ``await watch()`` beside the run."""

    def __init__(
        self, run: Run, console: Console, *, live: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._run = run
        self._clock = clock
        self._console = console
        self._live = live
        self._total: int | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._file_size = _size(run.options.input)

    async def watch(self) -> None:
        run = self._run
        fmt = (run.options.format or "").lower() or ("csv" if ".csv" in run.options.input else "jsonl")
        with contextlib.suppress(Exception):
            self._total = await asyncio.to_thread(count_rows, run.options.input, fmt)
        if not self._live:
            while True:
                await asyncio.sleep(LOG_INTERVAL)
                self._console.print(self.line().plain, highlight=False)
        with Live(self.line(), console=self._console, refresh_per_second=4, transient=True) as live:
            while True:
                await asyncio.sleep(0.25)
                live.update(self.line())

    def _done(self) -> int:
        return self._run.tally.total + self._run.already_done

    def _estimated_total(self) -> int | None:
        if self._total is not None:
            return self._total
        source = self._run.source
        if source is None or not self._file_size or not source.bytes_read:
            return None
        # gzip: scale the rows read so far by the share of compressed bytes consumed.
        return int(self._run.rows_read * self._file_size / source.bytes_read)

    def _rate(self, now: float, done: int) -> float:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[0][0] > _RATE_WINDOW:
            samples.popleft()
        t0, d0 = samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0

    def line(self) -> Text:
        run = self._run
        now = self._clock()
        done = self._done()
        rate = self._rate(now, done)
        total = self._estimated_total()
        elapsed = now - run.started
        by = run.tally.by_status
        text = Text()
        if total:
            total = max(total, done)
            share = done / total if total else 0.0
            filled = int(share * 24)
            text.append("━" * filled, style="green")
            text.append("━" * (24 - filled), style="grey35")
            text.append(f" {done:,}/{total:,} rows {share:5.1%}")
        else:
            text.append(f"{done:,} rows")
        text.append(f"  {rate:,.0f}/s")
        text.append(f"  elapsed {_clock(elapsed)}")
        pacer = run.pacer
        paused = pacer.paused_for if pacer is not None else 0.0
        if paused > 0:
            text.append(f"  paused {paused:.0f}s (Retry-After)", style="yellow")
        elif total and rate > 0 and elapsed >= 3 and done < total:
            text.append(f"  ETA {_clock(min((total - done) / rate, 359_999))}")
        text.append("  ok ")
        text.append(f"{by[Status.OK]:,}", style="green")
        if by[Status.FAILED]:
            text.append("  failed ")
            text.append(f"{by[Status.FAILED]:,}", style="red")
        if by[Status.INVALID]:
            text.append("  invalid ")
            text.append(f"{by[Status.INVALID]:,}", style="red")
        if by[Status.SKIPPED]:
            text.append(f"  skipped {by[Status.SKIPPED]:,}")
        if run.retrying:
            text.append(f"  retrying {run.retrying:,}", style="yellow")
        if pacer is not None:
            text.append(f"  concurrency {pacer.limit}/{pacer.max_limit}")
            if pacer.rate is not None:
                text.append(f"  rate ≤{pacer.rate:,.0f}/s")
        if run.stopping:
            text.append("  stopping…", style="yellow")
        return text


def print_summary(console: Console, result: RunResult, *, command: list[str]) -> None:
    """The end-of-run summary: what happened, how fast, and what to type next."""
    tally = result.tally
    state = result.state
    sent_rows = tally.by_status[Status.OK] + tally.by_status[Status.FAILED]
    title = "bulkpatch run interrupted" if result.interrupted else "bulkpatch run finished"
    console.print(f"[bold]{title}[/] in {_clock(result.elapsed)}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("status")
    table.add_column("this run", justify="right")
    table.add_column("whole ledger", justify="right")
    for status in Status:
        table.add_row(status.value, f"{tally.by_status[status]:,}", f"{state[status]:,}")
    console.print(table)
    rate = sent_rows / result.elapsed if result.elapsed > 0 else 0.0
    console.print(
        f"requests sent: {tally.attempts:,} for {sent_rows:,} rows ({rate:,.0f} rows/s,"
        f" {tally.attempts - sent_rows:,} resent); already done before this run: {result.already_done:,}"
    )
    _print_details(console, tally)
    if _cpu_bound(result):
        console.print(
            "bulkpatch used a whole CPU core (the API kept up): --processes 2 may go faster",
            highlight=False,
            markup=False,
        )
    console.print(f"ledger: {result.ledger_path}", highlight=False)
    if result.interrupted:
        console.print(f"resume with: {_shell(command)}", highlight=False, markup=False)
    elif result.limited:
        rest = _without_limit(command)
        console.print(f"stopped at --limit; go on with: {_shell(rest)}", highlight=False, markup=False)
    if state[Status.FAILED]:
        retry = [*command, "--retry-failed"] if "--retry-failed" not in command else command
        console.print(f"retry failed rows: {_shell(retry)}", highlight=False, markup=False)
    if state[Status.FAILED] or state[Status.INVALID]:
        fix = "fix" + _extension(result.input)
        console.print(
            f"rows to fix: bulkpatch report {_shell([result.ledger_path])} --failed-out {fix}",
            highlight=False,
            markup=False,
        )


def _cpu_bound(result: RunResult) -> bool:
    """True when one process, not the API, set the pace of a run long enough to tell."""
    return (
        result.processes == 1
        and result.elapsed >= 5.0
        and result.cpu_s >= 0.9 * result.elapsed
        and (os.cpu_count() or 1) > 1
    )


def print_report(console: Console, tally: Tally, ledger: str) -> None:
    """``bulkpatch report`` as a table."""
    console.print(f"[bold]ledger[/] {ledger}: {tally.total:,} rows", highlight=False)
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column()
    table.add_column(justify="right")
    for status in Status:
        table.add_row(status.value, f"{tally.by_status[status]:,}")
    console.print(table)
    console.print(f"requests sent: {tally.attempts:,}")
    _print_details(console, tally)


def _print_details(console: Console, tally: Tally) -> None:
    """Final HTTP statuses, latency percentiles and the most common errors."""
    if tally.by_http_status:
        codes = ", ".join(f"{code}: {n:,}" for code, n in sorted(tally.by_http_status.items()))
        console.print(f"final HTTP statuses: {codes}")
    latency = _latency(tally)
    if latency:
        console.print(f"row latency: {latency}")
    if tally.errors:
        console.print("most common errors:")
        for error, n in tally.errors.most_common(5):
            console.print(f"  {n:>8,}  {error}", highlight=False, markup=False)


def _without_limit(command: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for word in command:
        if skip:
            skip = False
        elif word == "--limit":
            skip = True
        elif not word.startswith("--limit="):
            out.append(word)
    return out


def _extension(name: str) -> str:
    """``.csv``, ``.jsonl.gz``...: the input's own kind, for a file of rows to fix."""
    suffixes = Path(name).suffixes
    if suffixes and suffixes[-1] == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ".csv"


def _latency(tally: Tally) -> str:
    values: dict[str, Any] = {
        p: tally.latency.percentile(n) for p, n in (("p50", 50), ("p95", 95), ("p99", 99))
    }
    if values["p50"] is None:
        return ""
    return "  ".join(f"{name} {value:,.1f} ms" for name, value in values.items())


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _shell(words: list[str]) -> str:
    return shlex.join(words)


def _size(name: str) -> int | None:
    if name == "-":
        return None
    try:
        return os.path.getsize(name)
    except OSError:
        return None
