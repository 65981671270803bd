"""``bulkpatch report --html``: one self-contained page about a run, for people and tickets.

The page is a single file with no script, no external style, font or image: it opens the same
from a ticket attachment on a machine with no network as in the browser of the person who ran
it. It shows the counts, the charts (outcomes, rows per second, rows in flight, latency), the
errors grouped by kind with example rows, the runs and the input. Everything read from a ledger
is escaped here, once, on its way into the markup: a ledger is data, and a key or an error
message may hold any text. Ledgers hold no secret, so neither does the page.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from html import escape

from bulkpatch import __version__
from bulkpatch.records.ledger import Status
from bulkpatch.records.run_view import RunView, duration, latency_labels, step_label, time_unit, utc
from bulkpatch.records.svg import Line, bar_chart, column_chart, line_chart, number
from bulkpatch.records.timeline import Series

ERRORS_SHOWN = 25
CHART_POINTS = 120
STATUS_COLORS = {
    Status.OK: "#2f9e44",
    Status.FAILED: "#e03131",
    Status.INVALID: "#f08c00",
    Status.SKIPPED: "#868e96",
    Status.UNCHANGED: "#4dabf7",
}

_STYLE = """
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1f2933;
  font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif; }
main { max-width: 1140px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 10px; }
.sub { color: #5f6b7a; margin: 0; } .bad { color: #c92a2a; } .good { color: #2b8a3e; }
.cards { margin: 18px 0; } footer { margin: 32px 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(124px, 1fr)); gap: 10px; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 10px 12px; }
.card b { display: block; font-size: 19px; font-variant-numeric: tabular-nums; white-space: nowrap; }
.card span, .note, footer { color: #5f6b7a; font-size: 12px; } .note { margin: 6px 0 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 12px; }
.chart { width: 100%; height: auto; background: #fff; border: 1px solid #dde1e6; border-radius: 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #dde1e6; }
table + table { margin-top: 12px; } table.narrow { width: auto; min-width: 320px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #eceef1; vertical-align: top; }
th { background: #f8f9fa; font-weight: 600; font-size: 13px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font: 12px/1.4 ui-monospace, 'DejaVu Sans Mono', monospace; overflow-wrap: anywhere; }
.ex { white-space: nowrap; } .ex code { overflow-wrap: normal; } .ex span { color: #5f6b7a; font-size: 12px; }
"""


def render_html(view: RunView, *, generated: float | None = None) -> str:
    """The report page for ``view`` (``run_view.collect``)."""
    tally = view.tally
    title = f"bulkpatch report: {tally.total:,} rows, {tally.bad:,} need attention"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body><main>",
        *_heading(view),
        *_cards(view),
        '<h2>Charts</h2><div class="charts">',
        *_charts(view),
        "</div>",
        *_errors(view),
        *_http_statuses(view),
        *_runs(view),
        f"<footer>Written by bulkpatch {escape(__version__)} at {escape(utc(generated or time.time()))}"
        " from the ledgers named above. Times are UTC.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _heading(view: RunView) -> list[str]:
    tally = view.tally
    period = view.period
    when = f"{utc(period[0])} to {utc(period[1])}" if period else "no time recorded"
    verdict = (
        f'<span class="bad">{tally.bad:,} rows need attention</span> (failed or invalid)'
        if tally.bad
        else '<span class="good">no row failed or invalid</span>'
    )
    names = ", ".join(f"<code>{escape(info.path)}</code>" for info in view.ledgers)
    label = "Ledger" if len(view.ledgers) == 1 else "Ledgers (in chain order)"
    inputs = sorted({info.input for info in view.ledgers if info.input})
    return [
        "<h1>bulkpatch run report</h1>",
        f'<p class="sub">{escape(when)} · {tally.total:,} rows · {verdict}</p>',
        f'<p class="sub">{label}: {names}</p>',
        f'<p class="sub">Input: {", ".join(f"<code>{escape(i)}</code>" for i in inputs) or "not named"}</p>',
    ]


def _cards(view: RunView) -> list[str]:
    tally = view.tally
    cards = [("rows", number(tally.total), "")]
    for status in Status:
        css = "bad" if status in (Status.FAILED, Status.INVALID) and tally.by_status[status] else ""
        cards.append((status.value, number(tally.by_status[status]), css))
    cards.append(("requests sent", number(tally.attempts), ""))
    for p in (50, 95, 99):
        ms = tally.latency.percentile(p)
        cards.append((f"p{p} latency", "n/a" if ms is None else f"{ms:,.1f} ms", ""))
    out = ['<div class="cards">']
    for label, value, css in cards:
        out.append(
            f'<div class="card"><b class="{css}">{escape(value)}</b><span>{escape(label)}</span></div>'
        )
    out.append("</div>")
    return out


def _charts(view: RunView) -> list[str]:
    tally = view.tally
    bars = [(status.value, tally.by_status[status], STATUS_COLORS[status]) for status in Status]
    out = [bar_chart("Outcomes (latest per row)", bars, unit="rows")]
    timeline = view.timeline
    if timeline.empty:
        out.append(_placeholder("No timed records: ledgers written before bulkpatch recorded times."))
    else:
        # Fewer, wider steps than the in-flight chart: a rate over 50 ms is mostly noise.
        points = max(1, min(CHART_POINTS // 2, math.ceil(timeline.active / 0.25)))
        done = timeline.rows_per_second(points)
        sent = timeline.rows_per_second(points, sent_only=True)
        lines = [Line("sent", "#1c7ed6", sent.values, fill=True)]
        if sum(done.values) > sum(sent.values):
            lines.append(Line("all outcomes", "#868e96", done.values))
        start = done.start
        scale, unit = time_unit(len(done.values) * done.width)  # the active time: idle is cut out
        cut = " (idle time cut out)" if done.gaps else ""
        x_label = f"time since {utc(start)} ({unit}){cut}"
        out.append(
            line_chart(
                "Rows per second",
                lines,
                x0=0.0,
                step=done.width / scale,
                x_label=x_label,
                y_label=f"rows/s (per {step_label(done.width)})",
                breaks=_breaks(done, scale),
            )
        )
        busy = timeline.in_flight(CHART_POINTS)
        limit = view.concurrency
        out.append(
            line_chart(
                "Rows in flight (concurrency)",
                [Line("in flight", "#7048e8", busy.values, fill=True)],
                x0=0.0,
                step=busy.width / scale,
                x_label=x_label,
                y_label=f"rows in flight (mean per {step_label(busy.width)})",
                breaks=_breaks(busy, scale),
                reference=(limit, f"--concurrency {limit}") if limit else None,
            )
        )
    out.append(_latency_chart(view))
    return out


def _latency_chart(view: RunView) -> str:
    bins = view.latency_bins
    used = [at for at, n in enumerate(bins) if n]
    if not used:
        return _placeholder("No latency recorded: no row was sent.")
    low, high = used[0], used[-1] + 1
    marks = [
        f"p{p} {value:,.0f} ms"
        for p in (50, 95, 99)
        if (value := view.tally.latency.percentile(p)) is not None
    ]
    return column_chart(
        "Row latency" + (f" ({', '.join(marks)})" if marks else ""),
        latency_labels()[low:high],
        bins[low:high],
        x_label="first request to final answer, retries included (ms unless marked s; log-scale bins)",
        y_label="rows",
        color="#1c7ed6",
    )


def _breaks(series: Series, scale: float) -> list[tuple[float, str]]:
    return [(at * series.width / scale, f"{duration(idle)} idle") for at, idle in series.gaps]


def _placeholder(text: str) -> str:
    note = f'<text x="270" y="140" text-anchor="middle" font-size="13" fill="#5f6b7a">{escape(text)}</text>'
    return f'<svg viewBox="0 0 540 270" class="chart" role="img">{note}</svg>'


def _errors(view: RunView) -> list[str]:
    if not view.errors:
        return ["<h2>Errors</h2>", '<p class="note">No row is failed or invalid.</p>']
    rows: list[list[str]] = []
    for group in view.errors[:ERRORS_SHOWN]:
        by = group.by_status.most_common()
        statuses = by[0][0] if len(by) == 1 else ", ".join(f"{s} {n:,}" for s, n in by)
        http = ", ".join(f"{code}" for code, _ in group.by_http_status.most_common())
        where = [f", {escape(e.ledger)}" if len(view.ledgers) > 1 else "" for e in group.examples]
        examples = "<br>".join(
            f'<span class="ex"><code>{escape(e.key or "(no key)")}</code> '
            f"<span>row {e.row:,}, line {e.line:,}{ledger}</span></span>"
            for e, ledger in zip(group.examples, where, strict=True)
        )
        first = group.examples[0].error if group.examples else ""
        detail = f'<div class="note">e.g. {escape(first)}</div>' if first and first != group.kind else ""
        kind = f"<code>{escape(group.kind)}</code>{detail}"
        rows.append([f"{group.rows:,}", kind, escape(statuses), escape(http) or "&ndash;", examples])
    head = ["rows", "kind of error", "status", "HTTP", "example rows (key, row, line)"]
    kinds = f"{len(view.errors):,} kind{'s' if len(view.errors) > 1 else ''}"
    out = [f"<h2>Errors: {kinds} over {view.tally.bad:,} rows</h2>"]
    out.append(_table(head, rows, numeric={0}, raw=True))
    hidden = len(view.errors) - ERRORS_SHOWN
    if hidden > 0 or view.errors_dropped:
        more = sum(g.rows for g in view.errors[ERRORS_SHOWN:]) + view.errors_dropped
        out.append(f'<p class="note">…and {more:,} rows of other kinds not shown.</p>')
    out.append(
        '<p class="note">Write these rows to a file to fix and run again: '
        "<code>bulkpatch report LEDGER... --failed-out FILE</code></p>"
    )
    return out


def _http_statuses(view: RunView) -> list[str]:
    codes = sorted(view.tally.by_http_status.items())
    if not codes:
        return []
    rows = [[str(code), f"{n:,}"] for code, n in codes]
    return [
        "<h2>Final HTTP status per row</h2>",
        _table(["HTTP status", "rows"], rows, numeric={1}, css="narrow"),
    ]


def _runs(view: RunView) -> list[str]:
    rows: list[list[str]] = []
    for info in view.ledgers:
        for run in info.runs:
            outcome = run.outcome or "no end written (killed, or still running)"
            limit = "" if run.concurrency is None else f"{run.concurrency}"
            rows.append(
                [info.path, utc(run.started), outcome, duration(run.elapsed_s), run.base_url or "", limit]
            )
    out = ["<h2>Runs and input</h2>"]
    if rows:
        head = ["ledger", "started", "outcome", "took", "base URL", "concurrency"]
        out.append(_table(head, rows, numeric={3, 5}))
    shown = sum(len(info.runs) for info in view.ledgers)
    total = sum(info.run_count for info in view.ledgers)
    if total > shown:
        out.append(f'<p class="note">Only the last {shown:,} of {total:,} runs are listed.</p>')
    inputs = [
        [
            info.path,
            info.input or "",
            (info.input_sha256 or "")[:12],
            info.format or "",
            f"{info.method or ''} {info.path_template or ''}".strip(),
            f"{info.row_records:,}",
        ]
        for info in view.ledgers
    ]
    out.append(_table(["ledger", "input", "sha256", "format", "request", "row records"], inputs, numeric={5}))
    if view.untimed:
        out.append(
            f'<p class="note">{view.untimed:,} row records carry no time (written by an older '
            "bulkpatch): they are counted, but not in the charts over time.</p>"
        )
    return out


def _table(
    head: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: set[int], css: str = "", raw: bool = False
) -> str:
    """A table; its cells are escaped here unless ``raw`` (the caller escaped what needs it)."""

    def cell(tag: str, at: int, text: str, escaped: bool) -> str:
        align = ' class="n"' if at in numeric else ""
        return f"<{tag}{align}>{text if escaped else escape(text)}</{tag}>"

    out = [f'<table class="{css}"><thead><tr>', *(cell("th", i, h, False) for i, h in enumerate(head))]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out += ["<tr>", *(cell("td", i, text, raw) for i, text in enumerate(row)), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)
