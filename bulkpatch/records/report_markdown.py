"""``bulkpatch report --markdown``: a run's summary to paste into a ticket.

Compact on purpose: the period and input, a counts table, latency percentiles and the most common
errors with example keys; no links and no images, since a ticket system may render Markdown
differently or not at all (it then still reads as text). Ledger values are untrusted text: a key
or an error message could carry a pipe, a backtick or markup that would break the table or
inject a link, so each one is put in a code span made longer than any backtick run inside it,
and line breaks and pipes are neutralised.
"""

from __future__ import annotations

import re

from bulkpatch.records.ledger import Status
from bulkpatch.records.run_view import RunView, duration, utc

ERRORS_SHOWN = 10
_BACKTICKS = re.compile(r"`+")


def render_markdown(view: RunView) -> str:
    """The Markdown summary of ``view`` (``run_view.collect``)."""
    tally = view.tally
    period = view.period
    lines = ["### bulkpatch run report", ""]
    when = f"{utc(period[0])} to {utc(period[1])}" if period else "no time recorded"
    lines.append(f"- **Period:** {when}")
    names = ", ".join(code(info.path) for info in view.ledgers)
    lines.append(f"- **Ledger{'s' if len(view.ledgers) > 1 else ''}:** {names}")
    inputs = sorted({info.input for info in view.ledgers if info.input})
    if inputs:
        lines.append(f"- **Input:** {', '.join(code(name) for name in inputs)}")
    runs = [run for info in view.ledgers for run in info.runs]
    if runs:
        last = runs[-1]
        outcome = last.outcome or "no end written (killed, or still running)"
        lines.append(f"- **Runs:** {len(runs)}; the last {outcome}, took {duration(last.elapsed_s)}")
    verdict = f"**{tally.bad:,} rows need attention** (failed or invalid)" if tally.bad else "no row failed"
    lines += [f"- **Result:** {tally.total:,} rows, {verdict}", ""]
    lines += ["| status | rows | share |", "|---|---:|---:|"]
    total = tally.total or 1
    for status in Status:
        n = tally.by_status[status]
        lines.append(f"| {status.value} | {n:,} | {100.0 * n / total:.1f}% |")
    lines.append(f"| **total** | **{tally.total:,}** | |")
    lines.append("")
    details = [f"requests sent: {tally.attempts:,}"]
    if tally.by_http_status:
        details.append(
            "final HTTP statuses: "
            + ", ".join(f"{c}: {n:,}" for c, n in sorted(tally.by_http_status.items()))
        )
    marks = [(p, tally.latency.percentile(p)) for p in (50, 95, 99)]
    if marks[0][1] is not None:
        details.append("row latency: " + ", ".join(f"p{p} {v:,.1f} ms" for p, v in marks if v is not None))
    lines += [f"{detail}  " for detail in details[:-1]] + [details[-1], ""]
    lines += _errors(view)
    return "\n".join(lines).rstrip("\n") + "\n"


def _errors(view: RunView) -> list[str]:
    if not view.errors:
        return []
    out = [
        f"**Errors** ({len(view.errors):,} kind{'s' if len(view.errors) > 1 else ''}"
        f" over {view.tally.bad:,} rows)",
        "",
        "| rows | error | examples |",
        "|---:|---|---|",
    ]
    for group in view.errors[:ERRORS_SHOWN]:
        examples = ", ".join(f"{code(e.key) if e.key else 'no key'} (row {e.row:,})" for e in group.examples)
        out.append(f"| {group.rows:,} | {code(group.kind)} | {examples} |")
    rest = sum(g.rows for g in view.errors[ERRORS_SHOWN:]) + view.errors_dropped
    if rest:
        out += ["", f"…and {rest:,} rows with other errors."]
    out += ["", "Rows to fix: `bulkpatch report LEDGER... --failed-out FILE`"]
    return out


def code(text: str) -> str:
    """``text`` as an inline code span that nothing inside it can close or break out of."""
    text = " ".join(text.split())  # a line break would end the table row
    text = text.replace("|", "\\|")  # GitHub-style tables split cells even inside code spans
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"
