from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.run_view import EXAMPLES_PER_ERROR, collect, duration, latency_labels, utc

T0 = 1_800_000_000.0


def ledger(path: Path, *records: RowResult | dict[str, object]) -> Path:
    header = {"type": "header", "ts": T0, "version": 2, "format": "csv", "method": "PATCH"}
    header |= {"input": {"path": "in.csv", "sha256": "ab" * 32}, "path_template": "/w/{id}"}
    lines = [orjson.dumps(header)]
    lines += [r.to_json() if isinstance(r, RowResult) else orjson.dumps(r) for r in records]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def start(ts: float, **options: object) -> dict[str, object]:
    return {"type": "run", "ts": ts, "event": "start", "pid": 1, "options": options}


def end(ts: float, event: str = "end", elapsed: float = 2.0) -> dict[str, object]:
    return {"type": "run", "ts": ts, "event": event, "elapsed_s": elapsed}


def row(n: int, status: Status, *, ts: float | None, error: str | None = None, ms: float = 20.0) -> RowResult:
    sent = status in (Status.OK, Status.FAILED)
    http = (204 if status is Status.OK else 404) if sent else None
    return RowResult(n, n + 1, f"w{n}", status, http, int(sent), error, ms if sent else None, 0, ts)


def test_counts_errors_and_latency_come_from_the_record_that_counts(tmp_path: Path) -> None:
    path = ledger(
        tmp_path / "a.jsonl",
        start(T0, concurrency=8, base_url="https://user:pw@api.example:8443/x?token=t#f"),
        row(1, Status.FAILED, ts=T0 + 1, error="HTTP 404: workload w-0001 not found"),
        *(
            row(n, Status.FAILED, ts=T0 + 1, error=f"HTTP 404: workload w-{n:04} not found")
            for n in range(2, 7)
        ),
        row(7, Status.INVALID, ts=T0 + 1, error="enabled: got 'maybe'"),
        row(1, Status.OK, ts=T0 + 2, ms=1500.0),  # row 1 retried: now ok
        end(T0 + 2),
    )
    view = collect([path])
    assert view.tally.by_status[Status.OK] == 1 and view.tally.bad == 6
    assert [(g.kind, g.rows) for g in view.errors] == [
        ("HTTP 404: workload <id> not found", 5),
        ("enabled: got '…'", 1),
    ]
    first = view.errors[0]
    assert len(first.examples) == EXAMPLES_PER_ERROR
    assert [(e.key, e.row, e.line) for e in first.examples] == [("w2", 2, 3), ("w3", 3, 4), ("w4", 4, 5)]
    assert first.examples[0].error == "HTTP 404: workload w-0002 not found"
    assert first.by_status == {"failed": 5} and first.by_http_status == {404: 5}
    # Latency of the records that count: five 404s at 20 ms, row 1 at 1.5 s.
    labels = latency_labels()
    assert {labels[i]: n for i, n in enumerate(view.latency_bins) if n} == {"20-50": 5, "1-2 s": 1}
    # The timeline sees every record: row 1 was answered twice.
    assert view.ledgers[0].row_records == 8
    assert view.timeline.rows_per_second(1).values[0] * view.timeline.rows_per_second(1).width == 8
    (run,) = view.ledgers[0].runs
    assert (run.started, run.ended, run.outcome, run.elapsed_s) == (T0, T0 + 2, "finished", 2.0)
    assert run.concurrency == 8 and view.concurrency == 8
    # A report travels further than a ledger: no user, password, query or fragment of a URL.
    assert run.base_url == "https://api.example:8443/x"
    info = view.ledgers[0]
    assert (info.input, info.format, info.method, info.path_template) == ("in.csv", "csv", "PATCH", "/w/{id}")
    assert view.period == (T0, T0 + 2)


def test_records_of_older_ledgers_count_without_a_place_on_the_charts(tmp_path: Path) -> None:
    path = ledger(tmp_path / "old.jsonl", row(1, Status.OK, ts=None), row(2, Status.OK, ts=None))
    view = collect([path])
    assert view.tally.total == 2 and view.untimed == 2
    assert view.timeline.empty and view.period is None


def test_runs_without_an_end_and_other_outcomes(tmp_path: Path) -> None:
    path = ledger(
        tmp_path / "a.jsonl",
        start(T0),
        start(T0 + 10),  # the first one was killed
        end(T0 + 12, "interrupted"),
        start(T0 + 20, concurrency="many"),
    )
    runs = collect([path]).ledgers[0].runs
    assert [(r.started, r.outcome) for r in runs] == [(T0, None), (T0 + 10, "interrupted"), (T0 + 20, None)]
    assert runs[2].concurrency is None


def test_a_chain_of_ledgers_is_read_like_report_reads_it(tmp_path: Path) -> None:
    first = ledger(tmp_path / "a.jsonl", row(1, Status.FAILED, ts=T0, error="HTTP 503"))
    fix = ledger(tmp_path / "b.jsonl", RowResult(1, 2, "w1", Status.OK, 204, 1, None, 5.0, 0, T0 + 60))
    view = collect([first, fix])
    assert view.tally.total == 1 and view.tally.bad == 0 and not view.errors
    assert [info.path for info in view.ledgers] == [str(first), str(fix)]
    # From the first request sent (20 ms before its answer) to the last answer.
    assert view.timeline.span == pytest.approx(60.02)


def test_labels_people_read() -> None:
    assert utc(T0) == "2027-01-15 08:00:00 UTC" and utc(None) == "?"
    assert (duration(2.04), duration(42), duration(3845)) == ("2.0 s", "42 s", "1:04:05")
    assert latency_labels()[0] == "<1 ms" and latency_labels()[-1] == "≥60 s"
