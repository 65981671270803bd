"""Everything a rendered report shows, gathered from ledgers in constant memory.

Two readings of the same ledgers answer two questions. *What stands* — counts, errors, latency —
comes from the record of each row that counts (``chain.latest``, as ``bulkpatch report`` has
always counted). *What happened when* — rows per second, rows in flight — comes from every row
record in the order written, since a row answered twice was answered twice. The headers and the
``run`` records name the input, the runs and their options. Everything is bounded: errors by
kind (a thousand kinds, three examples each), runs per ledger, fixed latency bins, and a
``Timeline`` whose bins widen as the span grows. Values are copied from the ledger as they are:
the renderers escape them.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bulkpatch.records.chain import LedgerPath, distinct, latest
from bulkpatch.records.ledger import RowResult, Status, iter_records
from bulkpatch.records.stats import Tally, error_kind
from bulkpatch.records.svg import number
from bulkpatch.records.timeline import Timeline

#: upper edges of the latency bins, in milliseconds (the last bin has none)
LATENCY_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000)
MAX_ERROR_KINDS = 1000
EXAMPLES_PER_ERROR = 3
RUNS_KEPT = 20
_NEEDS_ATTENTION = (Status.FAILED, Status.INVALID)


@dataclass(frozen=True, slots=True)
class Example:
    """One row that failed with a given kind of error."""

    key: str
    row: int
    line: int
    ledger: str
    error: str


@dataclass
class ErrorGroup:
    """Rows whose error is of one kind (see ``stats.error_kind``)."""

    kind: str
    rows: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_http_status: Counter[int] = field(default_factory=Counter)
    examples: list[Example] = field(default_factory=list)


@dataclass
class RunInfo:
    """One ``bulkpatch run`` over a ledger, from its ``run`` records."""

    started: float | None = None
    ended: float | None = None
    #: finished, interrupted, stopped, or None when no end was written (killed, or running)
    outcome: str | None = None
    elapsed_s: float | None = None
    base_url: str | None = None
    concurrency: int | None = None


@dataclass
class LedgerInfo:
    path: str
    input: str | None = None
    input_sha256: str | None = None
    format: str | None = None
    method: str | None = None
    path_template: str | None = None
    runs: list[RunInfo] = field(default_factory=list)
    #: runs in the ledger, also those beyond ``RUNS_KEPT``
    run_count: int = 0
    row_records: int = 0


@dataclass
class RunView:
    ledgers: list[LedgerInfo]
    tally: Tally = field(default_factory=Tally)
    #: the kinds of error of rows still failed or invalid, most rows first
    errors: list[ErrorGroup] = field(default_factory=list)
    #: rows whose kind of error came after ``MAX_ERROR_KINDS`` others (in no group)
    errors_dropped: int = 0
    #: rows per latency bin (``LATENCY_EDGES_MS``), of the records that count
    latency_bins: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES_MS) + 1))
    timeline: Timeline = field(default_factory=Timeline)
    #: row records without a time (ledgers older than the ``ts`` field): not in the charts
    untimed: int = 0

    @property
    def concurrency(self) -> int | None:
        """The highest ``--concurrency`` of the runs shown."""
        limits = [run.concurrency for info in self.ledgers for run in info.runs if run.concurrency]
        return max(limits) if limits else None

    @property
    def period(self) -> tuple[float, float] | None:
        """First and last time written in any of the ledgers (Unix seconds)."""
        times = [t for info in self.ledgers for run in info.runs for t in (run.started, run.ended) if t]
        if not self.timeline.empty:
            times += [self.timeline.first or 0.0, self.timeline.last or 0.0]
        return (min(times), max(times)) if times else None


def collect(ledgers: LedgerPath | list[LedgerPath] | tuple[LedgerPath, ...]) -> RunView:
    """Read ``ledgers`` (in chain order, as ``bulkpatch report`` takes them) into a ``RunView``."""
    chain = distinct([ledgers] if isinstance(ledgers, str | os.PathLike) else list(ledgers))
    view = RunView([LedgerInfo(os.fspath(path)) for path in chain])
    # latest() checks that every ledger exists before anything else is read.
    groups: dict[str, ErrorGroup] = {}
    for position, result in latest(chain):
        view.tally.add(result)
        if result.ms is not None:
            view.latency_bins[_latency_bin(result.ms)] += 1
        if result.status in _NEEDS_ATTENTION:
            _group(view, groups, result, view.ledgers[position].path)
    view.errors = sorted(groups.values(), key=lambda g: (-g.rows, g.kind))
    for info in view.ledgers:
        _read_ledger(info, view)
    return view


def _group(view: RunView, groups: dict[str, ErrorGroup], result: RowResult, ledger: str) -> None:
    error = result.error or "(no reason given)"
    kind = error_kind(error)
    group = groups.get(kind)
    if group is None:
        if len(groups) >= MAX_ERROR_KINDS:
            view.errors_dropped += 1
            return
        group = groups[kind] = ErrorGroup(kind)
    group.rows += 1
    group.by_status[result.status.value] += 1
    if result.http_status is not None:
        group.by_http_status[result.http_status] += 1
    if len(group.examples) < EXAMPLES_PER_ERROR:
        group.examples.append(Example(result.key, result.row, result.line, ledger, error))


def _latency_bin(ms: float) -> int:
    for at, edge in enumerate(LATENCY_EDGES_MS):
        if ms < edge:
            return at
    return len(LATENCY_EDGES_MS)


def _read_ledger(info: LedgerInfo, view: RunView) -> None:
    """The header, the runs and the timeline of one ledger, in one pass."""
    timeline = view.timeline
    current: RunInfo | None = None
    for data in iter_records(info.path):
        kind = data.get("type")
        if kind == "row":
            result = RowResult.from_json(data)
            if result is None:
                continue
            info.row_records += 1
            if result.ts is None:
                view.untimed += 1
            else:
                timeline.add(result.ts, result.ms, result.attempts > 0)
        elif kind == "header" and info.input is None:
            _read_header(info, data)
        elif kind == "run":
            current = _read_run(info, data, current)


def _read_header(info: LedgerInfo, data: dict[str, Any]) -> None:
    source = data.get("input")
    if isinstance(source, dict):
        info.input = _text(source.get("path"))
        info.input_sha256 = _text(source.get("sha256"))
    info.format = _text(data.get("format"))
    info.method = _text(data.get("method"))
    info.path_template = _text(data.get("path_template"))


def _read_run(info: LedgerInfo, data: dict[str, Any], current: RunInfo | None) -> RunInfo | None:
    """Fold one ``run`` record in; returns the run still open, if any."""
    event, ts = data.get("event"), _number(data.get("ts"))
    if event == "start":
        options = data.get("options")
        options = options if isinstance(options, dict) else {}
        concurrency = options.get("concurrency")
        run = RunInfo(
            started=ts,
            base_url=_safe_url(options.get("base_url")),
            concurrency=concurrency if type(concurrency) is int and concurrency > 0 else None,
        )
        info.run_count += 1
        info.runs.append(run)
        if len(info.runs) > RUNS_KEPT:
            del info.runs[0]
        return run
    if event in ("end", "interrupted", "stopped") and current is not None:
        current.ended = ts
        current.outcome = "finished" if event == "end" else str(event)
        current.elapsed_s = _number(data.get("elapsed_s"))
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _safe_url(value: object) -> str | None:
    """A base URL without user, password, query or fragment: a report is shared more widely than
    a ledger, and bulkpatch never puts credentials in a URL, but a hand-written one might."""
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return None
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def utc(ts: float | None) -> str:
    """A Unix time as people read it in a ticket: ``2026-11-29 23:41:20 UTC``."""
    if ts is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def duration(seconds: float | None) -> str:
    """``0.8 s``, ``42 s``, ``1:04:05``."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def latency_labels() -> list[str]:
    """One label per latency bin, in ms below a second: ``<1 ms``, ``1-2``, ... ``0.5-1 s``, ``≥60 s``."""

    def short(ms: int) -> str:
        return number(ms / 1000) if ms >= 1000 else str(ms)

    edges = LATENCY_EDGES_MS
    labels = [f"<{edges[0]} ms"]
    for low, high in itertools.pairwise(edges):
        if high < 1000:
            labels.append(f"{low}-{high}")
        else:
            labels.append(f"{number(low / 1000)}-{short(high)} s")
    return [*labels, f"≥{short(edges[-1])} s"]


def step_label(seconds: float) -> str:
    """The width of a chart's step: ``0.25 s``, ``1.5 min``."""
    return f"{number(round(seconds, 2))} s" if seconds < 120 else f"{number(round(seconds / 60, 1))} min"


def time_unit(span: float) -> tuple[float, str]:
    """Seconds per unit, and its name, for a time axis over ``span`` seconds."""
    if span <= 180:
        return 1.0, "s"
    if span <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"
