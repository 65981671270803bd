from __future__ import annotations

from pathlib import Path

from test_run_view import T0, ledger, row, start

from bulkpatch.records.ledger import Status
from bulkpatch.records.report_markdown import code, render_markdown
from bulkpatch.records.run_view import collect


def test_a_summary_for_a_ticket(tmp_path: Path) -> None:
    path = ledger(
        tmp_path / "a.jsonl",
        start(T0, concurrency=4),
        row(1, Status.OK, ts=T0 + 1),
        row(2, Status.FAILED, ts=T0 + 2, error="HTTP 404: workload w-0002 not found"),
        row(3, Status.INVALID, ts=T0 + 2, error="missing workload_id"),
    )
    text = render_markdown(collect([path]))
    assert text.startswith("### bulkpatch run report\n")
    assert "- **Period:** 2027-01-15 08:00:00 UTC to 2027-01-15 08:00:02 UTC" in text
    assert "**2 rows need attention**" in text
    assert "| ok | 1 | 33.3% |" in text and "| failed | 1 | 33.3% |" in text
    assert "| 1 | `HTTP 404: workload <id> not found` | `w2` (row 2) |" in text
    assert "http" not in text.replace("HTTP", "")  # no link: a ticket gets text


def test_ledger_text_cannot_break_out_of_its_code_span_or_table_row() -> None:
    assert code("plain") == "`plain`"
    assert code("a `tick` b") == "``a `tick` b``"
    assert code("`edge``") == "``` `edge`` ```"
    assert code("a|b\nc") == "`a\\|b c`"
    assert "[x](javascript:1)" in code("[x](javascript:1)")  # inside a code span: not a link
