"""What the operator sees: live progress while a run goes, and the summary after it.

Part of the CLI layer (with ``cli.py``): the only other module that touches rich and the terminal.
Progress is redrawn on a timer from counters the run keeps anyway, never per row. When stderr is
no terminal (cron, ``kubectl logs``) it becomes log lines instead (``logline.py``), one every
``LOG_INTERVAL`` seconds and at start and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bulkpatch.cli.hints import next_steps
from bulkpatch.cli.logline import Event, LogFormat, RunLog, hms
from bulkpatch.records.ledger import Status
from bulkpatch.records.results import RunResult, RunStatus
from bulkpatch.records.stats import Tally
from bulkpatch.rows.reader import is_stream

#: seconds between status lines when stderr is not a terminal (cron, Kubernetes logs)
LOG_INTERVAL = 10.0
_RATE_WINDOW = 10.0
#: error kinds a run's summary lists; ``bulkpatch report`` lists them all
TOP_ERRORS = 5


def count_rows(name: str, fmt: str) -> int | None:
    """Rows in a plain input file, counted by newlines (fast; multi-line CSV records overcount)."""
    if is_stream(name) or name.endswith(".gz"):
        return None  # a pipe or FIFO: reading it here would take rows away from the run
    try:
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
    """Redraws a one-line status from a run's status snapshots; ``await watch()`` beside the run.

    ``status`` is ``Run.status`` (or anything that returns a ``RunStatus``).

    ``live`` False writes log lines instead, as ``log_format`` ``"text"`` or ``"json"``.
    ``clock`` times rates, ``wall`` stamps log lines and ``sleep`` waits between them.
    """

    def __init__(
        self,
        status: Callable[[], RunStatus],
        console: Console,
        *,
        live: bool,
        log_format: LogFormat = "text",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        end_line: bool = True,
    ) -> None:
        self._status = status
        #: False: the caller writes the end line itself (``log("end", ...)``) once it knows the outcome
        self._end_line = end_line
        #: True once the start line is written
        self.started = False
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._console = console
        self._live = live
        self._log = RunLog(log_format)
        self._total: int | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._input = status().input
        self._file_size = _size(self._input)

    async def _count(self) -> None:
        """Count the input's rows, once the run has opened it and knows its format."""
        while (fmt := self._status().format) is None:
            await self._sleep(0.05)
        with contextlib.suppress(Exception):
            self._total = await asyncio.to_thread(count_rows, self._input, fmt)

    async def watch(self) -> None:
        if not self._live:
            logged = False
            try:
                # A run refused before it sends anything ends with its one-line error, and no
                # log lines around it: the first line waits until the run is under way.
                while not self._status().ready:
                    await self._sleep(0.1)
                await self._count()
                self.log("start")
                logged = True
                while True:
                    await self._sleep(LOG_INTERVAL)
                    self.log("progress")
            except asyncio.CancelledError:
                # A run shorter than the first poll still gets its start and end lines.
                if logged or self._status().ready:
                    if not logged:
                        self.log("start")
                    if self._end_line:
                        self.log("end")
                raise
        await self._count()
        with Live(self.line(), console=self._console, refresh_per_second=4, transient=True) as live:
            while True:
                await asyncio.sleep(0.25)
                live.update(self.line())

    def log(self, event: Event, extra: dict[str, Any] | None = None) -> None:
        """Write one log line, ``extra`` fields last; a closed stderr is no reason to stop the run."""
        text = self._log.format(self.record(event), extra)
        self.started = True
        with contextlib.suppress(OSError, ValueError):
            self._console.file.write(text + "\n")
            self._console.file.flush()

    def record(self, event: Event) -> dict[str, Any]:
        """What a log line for ``event`` would say now."""
        total = self._estimated_total()
        return self._log.record(self._status(), event, now=self._clock(), wall=self._wall(), total=total)

    def _estimated_total(self, status: RunStatus | None = None) -> int | None:
        if self._total is not None:
            return self._total
        status = status or self._status()
        if not self._file_size or not status.bytes_read:
            return None
        # gzip: scale the rows read so far by the share of compressed bytes consumed.
        return int(status.rows_read * self._file_size / status.bytes_read)

    def _rate(self, now: float, done: int) -> float:
        """Rows per second over the last ``_RATE_WINDOW`` seconds, of this run's rows only."""
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[0][0] > _RATE_WINDOW:
            samples.popleft()
        t0, d0 = samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0

    def line(self) -> Text:
        status = self._status()
        now = self._clock()
        done = status.done + status.already_done
        rate = self._rate(now, status.done)
        total = self._estimated_total(status)
        elapsed = now - status.started
        by = Counter(status.counts)
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
        text.append(f"  elapsed {hms(elapsed)}")
        paused = status.paused_for
        if status.outage_for > 0:
            text.append(f"  API unreachable for {status.outage_for:.0f}s, probing", style="yellow")
        elif paused > 0:
            text.append(f"  paused {paused:.0f}s (Retry-After)", style="yellow")
        elif total and rate > 0 and elapsed >= 3 and done < total:
            text.append(f"  ETA {hms(min((total - done) / rate, 359_999))}")
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
        if by[Status.UNCHANGED]:
            text.append(f"  unchanged {by[Status.UNCHANGED]:,}")
        if status.retrying:
            text.append(f"  retrying {status.retrying:,}", style="yellow")
        if status.concurrency is not None:
            text.append(f"  concurrency {status.concurrency}/{status.max_concurrency}")
            if status.rate is not None:
                text.append(f"  rate ≤{status.rate:,.0f}/s")
            if status.quota is not None:
                text.append(f"  quota {status.quota}")
        if status.stopping:
            text.append("  stopping…", style="yellow")
        return text


def print_summary(
    console: Console, result: RunResult, *, command: list[str], stopped: BaseException | None = None
) -> None:
    """The end-of-run summary: what happened, how fast, and what to type next.

    ``stopped`` is the error that ended the run early, if one did: the hints then say how to go
    on after fixing it, not which rows to fix.
    """
    tally = result.tally
    state = result.state
    sent_rows = tally.by_status[Status.OK] + tally.by_status[Status.FAILED]
    title = "bulkpatch run interrupted" if result.interrupted else "bulkpatch run finished"
    console.print(f"[bold]{title}[/] in {hms(result.elapsed)}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("status")
    table.add_column("this run", justify="right")
    table.add_column("whole ledger", justify="right")
    for status in Status:
        table.add_row(status.value, f"{tally.by_status[status]:,}", f"{state[status]:,}")
    console.print(table)
    rate = sent_rows / result.elapsed if result.elapsed > 0 else 0.0
    resent = max(0, tally.attempts - sent_rows)
    unrecorded = max(0, result.requests - tally.attempts)
    console.print(
        f"requests sent: {result.requests:,} for {sent_rows:,} rows ({rate:,.0f} rows/s, {resent:,} resent"
        + (f", {unrecorded:,} for rows left unrecorded" if unrecorded else "")
        + f"); already done before this run: {result.already_done:,}"
    )
    for line in _input_notes(result):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    _print_details(console, tally, ledger=result.ledger_path)
    if _cpu_bound(result):
        console.print(
            "bulkpatch used a whole CPU core (the API kept up): --processes 2 may go faster",
            highlight=False,
            markup=False,
        )
    console.print(f"ledger: {result.ledger_path}", highlight=False)
    if result.memory_path is not None:
        console.print(f"memory: {result.memory_path}", highlight=False)
    # Hints are commands to paste: one line each, whatever the terminal's width.
    for hint in next_steps(result, command, stopped):
        console.print(hint, highlight=False, markup=False, soft_wrap=True)


def _input_notes(result: RunResult) -> list[str]:
    """What the run found about its input: changes, repeated keys, shards, a kept ledger."""
    notes = []
    if result.changed:
        notes.append(f"rows whose request differs from the one last applied to their key: {result.changed:,}")
    if result.gone:
        notes.append(
            f"keys the last complete run had and this input has not: {result.gone:,}"
            f" (bulkpatch state {result.memory_path} --gone)"
        )
    if result.repeated_keys:
        notes.append(f"keys sent by more than one row: {result.repeated_keys:,} (in input order)")
    if result.shard is not None:
        k, n = result.shard
        share = f"; --rate is the job's, this shard takes {result.rate:,.1f}/s" if result.rate else ""
        notes.append(f"shard {k} of {n}: {result.other_shards:,} rows left to the other shards{share}")
    if result.archived_ledger is not None:
        notes.append(f"the input changed since the last run: its ledger was kept as {result.archived_ledger}")
    return notes


def _cpu_bound(result: RunResult) -> bool:
    """True when one process, not the API, set the pace of a run long enough to tell."""
    return (
        result.processes == 1
        and result.elapsed >= 5.0
        and result.cpu_s >= 0.9 * result.elapsed
        and (os.cpu_count() or 1) > 1
    )


def print_report(console: Console, tally: Tally, ledger: str | Sequence[str]) -> None:
    """``bulkpatch report`` as a table, over one ledger or a chain of them."""
    ledgers = [ledger] if isinstance(ledger, str) else list(ledger)
    label = "ledger" if len(ledgers) == 1 else "ledgers"
    console.print(f"[bold]{label}[/] {', '.join(ledgers)}: {tally.total:,} rows", highlight=False)
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column()
    table.add_column(justify="right")
    for status in Status:
        table.add_row(status.value, f"{tally.by_status[status]:,}")
    console.print(table)
    console.print(f"requests sent: {tally.attempts:,}")
    _print_details(console, tally, every=True)


def _print_details(console: Console, tally: Tally, *, ledger: str = "LEDGER", every: bool = False) -> None:
    """Final HTTP statuses, latency percentiles and the errors by kind: the most common ones, and
    how many more kinds ``bulkpatch report`` lists (``every``: all of them)."""
    if tally.by_http_status:
        codes = ", ".join(f"{code}: {n:,}" for code, n in sorted(tally.by_http_status.items()))
        console.print(f"final HTTP statuses: {codes}")
    latency = _latency(tally)
    if latency:
        console.print(f"row latency: {latency}")
    if tally.errors:
        console.print("errors by kind:" if every else "most common errors:")
        kinds = tally.errors.most_common(None if every else TOP_ERRORS)
        for error, n in kinds:
            where = f"  (e.g. {example})" if (example := _example(tally, error)) else ""
            console.print(f"  {n:>8,}  {error}{where}", highlight=False, markup=False, soft_wrap=True)
        if more := len(tally.errors) - len(kinds):
            console.print(
                f"  +{more:,} more {'kind' if more == 1 else 'kinds'}: see bulkpatch report {ledger}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )


def _example(tally: Tally, error: str) -> str:
    """``w-0007, row 12``: where to find a row of this kind (a row without a key has a number)."""
    row, key = tally.error_rows.get(error), tally.error_examples.get(error)
    if key and row is not None:
        return f"{key}, row {row}"
    return key or (f"row {row}" if row is not None else "")


def _latency(tally: Tally) -> str:
    values: dict[str, Any] = {
        p: tally.latency.percentile(n) for p, n in (("p50", 50), ("p95", 95), ("p99", 99))
    }
    if values["p50"] is None:
        return ""
    return "  ".join(f"{name} {value:,.1f} ms" for name, value in values.items())


def _size(name: str) -> int | None:
    if name == "-":
        return None
    try:
        return os.path.getsize(name)
    except OSError:
        return None
