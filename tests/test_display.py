from __future__ import annotations

import asyncio
import io
import os
import re
from pathlib import Path

import orjson
import pytest
from helpers import FakeClock, write
from rich.console import Console

from bulkpatch.cli.display import Progress, count_rows, print_report, print_summary
from bulkpatch.cli.logline import RunLog
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.results import RunResult, RunStatus
from bulkpatch.records.stats import Tally


def test_count_rows(tmp_path: Path) -> None:
    assert count_rows(str(write(tmp_path / "a.csv", "id\n1\n2\n3")), "csv") == 3
    assert count_rows(str(write(tmp_path / "a.jsonl", "{}\n{}\n")), "jsonl") == 2
    assert count_rows("-", "csv") is None


class Stub:
    """A run as the display sees it: a ``RunStatus`` on each call, built from fields a test sets."""

    def __init__(self, input: str, started: float) -> None:
        self.tally = Tally()
        self.fields: dict[str, object] = {
            "input": input, "format": "csv", "ready": True, "started": started,
            "concurrency": 16, "max_concurrency": 16,
        }  # fmt: skip

    def __call__(self) -> RunStatus:
        return RunStatus(counts=dict(self.tally.by_status), **self.fields)  # type: ignore[arg-type]


def progress_at(tmp_path: Path) -> tuple[Progress, Stub, FakeClock]:
    clock = FakeClock(start=100.0)
    run = Stub(str(write(tmp_path / "a.csv", "id\n")), clock.now)
    progress = Progress(run, Console(file=io.StringIO()), live=False, clock=clock)
    progress._total = 1000
    return progress, run, clock


def finish(run: Stub, n: int) -> None:
    for i in range(n):
        run.tally.add(RowResult(i, i, "k", Status.OK, 204, 1, None, 5.0))


def test_no_eta_in_the_first_seconds_then_a_steady_one(tmp_path: Path) -> None:
    progress, run, clock = progress_at(tmp_path)
    finish(run, 1)
    clock.now += 0.5
    assert "ETA" not in progress.line().plain  # one early row says nothing about the rate
    for _ in range(8):
        clock.now += 0.5
        finish(run, 50)
        line = progress.line().plain
    assert "401/1,000 rows" in line and "100/s" in line
    assert "ETA 0:00:05" in line  # 599 rows at 100/s, not an extrapolation from the first row
    assert "concurrency 16/16" in line


def test_a_server_pause_shows_instead_of_an_eta(tmp_path: Path) -> None:
    progress, run, clock = progress_at(tmp_path)
    clock.now += 5
    finish(run, 100)
    run.fields["paused_for"] = 30.0
    line = progress.line().plain
    assert "paused 30s (Retry-After)" in line and "ETA" not in line


def test_summary_says_how_to_resume_and_what_to_fix(tmp_path: Path) -> None:
    tally = Tally()
    tally.add(RowResult(1, 2, "a", Status.FAILED, 404, 1, "HTTP 404: NotFound", 3.0))
    state = dict.fromkeys(Status, 0) | {Status.FAILED: 1}
    result = RunResult(
        tally, state, 0, 2.0, True, "in.jsonl.ledger.jsonl", input="in.jsonl", transient_failed=1
    )
    out = io.StringIO()
    print_summary(Console(file=out, width=200), result, command=["bulkpatch", "run", "in.jsonl"])
    text = out.getvalue()
    assert "resume with: bulkpatch run in.jsonl" in text
    assert (
        "retry failed rows (5xx, 429, timeouts; =all for 4xx too): bulkpatch run in.jsonl --retry-failed"
        in text
    )
    assert "--failed-out fix.jsonl" in text
    assert "1  HTTP 404: NotFound" in text


def test_summary_after_a_canary_run_says_how_to_go_on() -> None:
    state = dict.fromkeys(Status, 0)
    result = RunResult(Tally(), state, 0, 1.0, False, "a.csv.ledger.jsonl", input="a.csv", limited=True)
    out = io.StringIO()
    print_summary(
        Console(file=out, width=200), result, command=["bulkpatch", "run", "a.csv", "--limit", "10"]
    )
    assert "stopped at --limit; go on with: bulkpatch run a.csv" in out.getvalue()
    assert "--limit 10" not in out.getvalue()


@pytest.mark.parametrize(
    ("cpu_s", "processes", "cores", "hint"),
    [(9.5, 1, 2, True), (4.0, 1, 2, False), (9.5, 2, 2, False), (9.5, 1, 1, False)],
)
def test_summary_suggests_processes_only_when_one_core_set_the_pace(
    monkeypatch: pytest.MonkeyPatch, cpu_s: float, processes: int, cores: int, hint: bool
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    state = dict.fromkeys(Status, 0)
    result = RunResult(
        Tally(), state, 0, 10.0, False, "a.csv.ledger.jsonl", input="a.csv", cpu_s=cpu_s, processes=processes
    )
    out = io.StringIO()
    print_summary(Console(file=out, width=200), result, command=["bulkpatch", "run", "a.csv"])
    assert ("--processes 2 may go faster" in out.getvalue()) is hint


# Log mode: stderr is no terminal (cron, kubectl logs).

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def log_progress(tmp_path: Path, log_format: str = "text") -> tuple[Progress, Stub, FakeClock, io.StringIO]:
    clock = FakeClock(start=100.0)
    run = Stub(str(write(tmp_path / "a.csv", "id\n" + "x\n" * 1000)), clock.now)
    sink = io.StringIO()

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        finish(run, 150)  # the run goes on while the progress waits: 15 rows/s
        if run.tally.total >= 450:
            raise asyncio.CancelledError  # the CLI cancels the watcher when the run ends

    progress = Progress(
        run,
        Console(file=sink, width=40),
        live=False,
        log_format=log_format,  # type: ignore[arg-type]
        clock=clock,
        wall=lambda: 1_700_000_000.0 + clock.now,
        sleep=sleep,
    )
    return progress, run, clock, sink


async def test_log_lines_carry_a_timestamp_a_real_rate_and_no_wrapping_or_glyphs(tmp_path: Path) -> None:
    progress, _, _, sink = log_progress(tmp_path)
    with pytest.raises(asyncio.CancelledError):
        await progress.watch()
    lines = sink.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["start", "progress", "progress", "end"]
    assert all(ISO.match(line.split()[0]) for line in lines)
    assert lines[0].startswith(
        "2023-11-14T22:15:00.000Z bulkpatch start rows=0/1000 pct=0.0% elapsed=0:00:00"
    )
    assert "rate=" not in lines[0]  # nothing measured yet: no made-up 0/s
    assert "rows=150/1000 pct=15.0% rate=15.0/s eta=0:00:56" in lines[1]  # 850 rows at 15/s
    assert "rate=15.0/s" in lines[3] and "ok=450" in lines[3] and "eta" not in lines[3]
    assert all(line.isascii() for line in lines)  # the console is 40 columns: nothing wrapped


async def test_log_lines_as_json(tmp_path: Path) -> None:
    progress, _, _, sink = log_progress(tmp_path, "json")
    with pytest.raises(asyncio.CancelledError):
        await progress.watch()
    records = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["start", "progress", "progress", "end"]
    assert all(ISO.fullmatch(r["ts"]) for r in records)
    assert records[0]["rate"] is None
    assert {k: records[1][k] for k in ("done", "total", "rate", "eta_s", "ok", "failed")} == {
        "done": 150,
        "total": 1000,
        "rate": 15.0,
        "eta_s": 56.7,
        "ok": 150,
        "failed": 0,
    }


def test_on_a_resume_rate_and_eta_count_only_this_runs_rows(tmp_path: Path) -> None:
    progress, run, clock = progress_at(tmp_path)
    progress.line()
    run.fields["already_done"] = 600  # the ledger had these: skipped in a blink
    for _ in range(8):
        clock.now += 0.5
        finish(run, 10)
        line = progress.line().plain
    assert "680/1,000 rows" in line and " 20/s" in line
    assert "ETA 0:00:16" in line  # 320 rows at 20/s
    log = RunLog()
    run.tally, run.fields["started"] = Tally(), clock.now  # a new run: it starts with nothing done
    log.record(run(), "start", now=clock.now, wall=0.0, total=1000)
    clock.now += 10
    finish(run, 100)
    record = log.record(run(), "progress", now=clock.now, wall=10.0, total=1000)
    assert (record["rate"], record["eta_s"], record["already_done"]) == (10.0, 30.0, 600)


def test_log_format_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log_format"):
        log_progress(tmp_path, "yaml")


# Hints safe to paste.


def summary_text(result: RunResult, command: list[str]) -> str:
    out = io.StringIO()
    print_summary(Console(file=out, width=80), result, command=command)
    return out.getvalue()


def test_hints_never_print_header_values_or_url_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    state = dict.fromkeys(Status, 0) | {Status.FAILED: 1}
    result = RunResult(Tally(), state, 0, 2.0, True, "a.csv.ledger.jsonl", input="a.csv", transient_failed=1)
    command = ["bulkpatch", "run", "a.csv", "-H", "X-Api-Key: SECRET1", "--header=X-Other: SECRET2"]
    command += [
        "-qHX-Third: SECRET3",
        "--base-url",
        "https://user:SECRET4@api.example",
        "--token-url=https://SECRET5@t",
    ]
    text = summary_text(result, command)
    for secret in ("SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5"):
        assert secret not in text
    assert "resume with: bulkpatch run a.csv -H 'X-Api-Key: …' '--header=X-Other: …' '-qHX-Third: …'" in text
    assert "--base-url 'https://user:…@api.example' '--token-url=https://…@t'" in text
    assert (
        "retry failed rows (5xx, 429, timeouts; =all for 4xx too): bulkpatch run a.csv -H 'X-Api-Key: …'"
        in text
    )


def test_after_running_fix_csv_the_hint_names_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "fix.csv", "workload_id,name\n")
    state = dict.fromkeys(Status, 0) | {Status.INVALID: 1}
    result = RunResult(Tally(), state, 0, 2.0, False, "fix.csv.ledger.jsonl", input="fix.csv")
    text = summary_text(result, ["bulkpatch", "run", "fix.csv"])
    assert "rows to fix: bulkpatch report fix.csv.ledger.jsonl --failed-out fix-2.csv" in text
    write(tmp_path / "fix-2.csv", "workload_id,name\n")
    result = RunResult(Tally(), state, 0, 2.0, False, "fix-2.csv.ledger.jsonl", input="fix-2.csv")
    assert "--failed-out fix-3.csv" in summary_text(result, ["bulkpatch", "run", "fix-2.csv"])


def test_the_summary_groups_twenty_missing_workloads_in_one_line(tmp_path: Path) -> None:
    tally = Tally()
    for i in range(20):
        key = f"w-{i:04d}"
        tally.add(
            RowResult(
                i + 1, i + 2, key, Status.FAILED, 404, 1, f"HTTP 404: NotFound: workload {key} not found"
            )
        )
    state = dict.fromkeys(Status, 0) | {Status.FAILED: 20}
    text = summary_text(
        RunResult(tally, state, 0, 2.0, False, "a.csv.ledger.jsonl", input="a.csv"), ["bulkpatch"]
    )
    lines = [line for line in text.splitlines() if "HTTP 404" in line]
    assert lines == ["        20  HTTP 404: NotFound: workload <id> not found  (e.g. w-0000, row 1)"]
    out = io.StringIO()
    print_report(Console(file=out, width=200), tally, ["a.ledger.jsonl", "fix.ledger.jsonl"])
    assert "ledgers a.ledger.jsonl, fix.ledger.jsonl: 20 rows" in out.getvalue()
    assert out.getvalue().count("HTTP 404") == 1


async def test_a_run_refused_before_sending_writes_no_log_lines(tmp_path: Path) -> None:
    progress, run, _, sink = log_progress(tmp_path)
    run.fields["ready"] = False  # the configuration was refused: the run never got to send

    async def refused(seconds: float) -> None:
        raise asyncio.CancelledError

    progress._sleep = refused
    with pytest.raises(asyncio.CancelledError):
        await progress.watch()
    assert sink.getvalue() == ""  # the one-line error stays the only line on stderr


def test_every_error_kind_is_reachable_and_each_has_an_example_row() -> None:
    tally = Tally()
    for kind in range(7):
        tally.add(
            RowResult(
                kind + 1, kind + 2, f"w{kind}", Status.FAILED, 400, 1, f"HTTP 400: bad field f{kind}", 1
            )
        )
    tally.add(RowResult(12, 13, "", Status.INVALID, None, 0, "missing workload_id", None))
    state = dict.fromkeys(Status, 0) | {Status.FAILED: 7, Status.INVALID: 1}
    text = summary_text(RunResult(tally, state, 0, 1.0, False, "a.ledger", input="a.csv"), ["bulkpatch"])
    assert "+3 more kinds: see bulkpatch report a.ledger" in text
    assert text.count("(e.g. ") == 5
    out = io.StringIO()
    print_report(Console(file=out, width=200), tally, "a.ledger")
    report = out.getvalue()
    assert "more kind" not in report and report.count("(e.g. ") == 8
    assert "missing workload_id  (e.g. row 12)" in report  # a row without a key has its number


def summary(result: RunResult) -> str:
    out = io.StringIO()
    print_summary(Console(file=out, width=300), result, command=["bulkpatch", "run", "a.csv"])
    return out.getvalue()


def test_the_retry_hint_comes_only_for_failures_that_may_pass() -> None:
    tally = Tally()
    tally.add(RowResult(1, 2, "w1", Status.FAILED, 404, 1, "HTTP 404", 1.0))
    state = dict.fromkeys(Status, 0) | {Status.FAILED: 1}
    final = RunResult(tally, state, 0, 1.0, False, "a.csv.ledger.jsonl", input="a.csv", requests=1)
    assert "retry failed rows" not in summary(final)
    transient = RunResult(
        tally, state, 0, 1.0, False, "a.csv.ledger.jsonl", input="a.csv", requests=1, transient_failed=1
    )
    assert "retry failed rows" in summary(transient)


def test_requests_for_rows_left_unrecorded_are_not_called_resent() -> None:
    state = dict.fromkeys(Status, 0)
    result = RunResult(Tally(), state, 0, 1.0, False, "a.csv.ledger.jsonl", input="a.csv", requests=16)
    text = summary(result)
    assert "0 resent, 16 for rows left unrecorded" in text


async def test_a_short_run_still_logs_its_start_and_end_lines() -> None:
    sink = io.StringIO()
    status = RunStatus(input="-", format="csv", ready=True)
    progress = Progress(lambda: status, Console(file=sink), live=False, sleep=lambda s: asyncio.sleep(3600))
    watcher = asyncio.ensure_future(progress.watch())
    await asyncio.sleep(0)
    watcher.cancel()  # the run ended before the first line was due
    with pytest.raises(asyncio.CancelledError):
        await watcher
    assert [line.split()[2] for line in sink.getvalue().splitlines()] == ["start", "end"]


def test_a_quota_the_server_announces_shows_with_the_rate(tmp_path: Path) -> None:
    progress, run, _ = progress_at(tmp_path)
    assert "quota" not in progress.line().plain
    run.fields |= {"rate": 297.0, "quota": "300 per 1 s"}
    assert "rate ≤297/s  quota 300 per 1 s" in progress.line().plain
