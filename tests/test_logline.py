"""Log lines: the start line describes the run as it began."""

from __future__ import annotations

from bulkpatch.cli.logline import RunLog, utc
from bulkpatch.records.ledger import Status
from bulkpatch.records.results import RunStatus


def test_the_start_line_says_nothing_was_done_yet_even_when_rows_went_by_meanwhile() -> None:
    # The input's rows are counted (in a thread) before the start line: the run goes on meanwhile.
    status = RunStatus(input="a.csv", ready=True, started=5.0, counts={Status.OK: 10}, already_done=3)
    record = RunLog("json").record(status, "start", now=7.0, wall=1_000.0, total=300)
    assert (record["done"], record["ok"], record["already_done"], record["elapsed_s"]) == (0, 0, 0, 0.0)
    assert record["ts"] == utc(998.0)  # when sending began


def test_extra_fields_go_last_in_both_formats() -> None:
    status = RunStatus(input="a.csv", ready=True, started=5.0)
    for log_format, expected in (("text", " exit_code=1"), ("json", ',"exit_code":1}')):
        log = RunLog(log_format)  # type: ignore[arg-type]
        line = log.format(log.record(status, "end", now=6.0, wall=1.0, total=None), {"exit_code": 1})
        assert line.endswith(expected)
