from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from fakes import FakeClock, write
from rich.console import Console

from bulkpatch.display import Progress, count_rows, print_summary
from bulkpatch.ledger import RowResult, Status
from bulkpatch.options import RunOptions
from bulkpatch.pacing import Pacer
from bulkpatch.pipeline import Run, RunResult
from bulkpatch.stats import Tally


def test_count_rows(tmp_path: Path) -> None:
    assert count_rows(str(write(tmp_path / "a.csv", "id\n1\n2\n3")), "csv") == 3
    assert count_rows(str(write(tmp_path / "a.jsonl", "{}\n{}\n")), "jsonl") == 2
    assert count_rows("-", "csv") is None


def progress_at(tmp_path: Path) -> tuple[Progress, Run, FakeClock]:
    clock = FakeClock(start=100.0)
    run = Run(RunOptions(input=str(write(tmp_path / "a.csv", "id\n")), base_url="http://x"))
    run.started = clock.now
    run.pacer = Pacer(16, clock=clock, sleep=clock.sleep)
    progress = Progress(run, Console(file=io.StringIO()), live=False, clock=clock)
    progress._total = 1000
    return progress, run, clock


def finish(run: Run, n: int) -> None:
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
    assert run.pacer is not None
    run.pacer.pause(30)
    line = progress.line().plain
    assert "paused 30s (Retry-After)" in line and "ETA" not in line


def test_summary_says_how_to_resume_and_what_to_fix(tmp_path: Path) -> None:
    tally = Tally()
    tally.add(RowResult(1, 2, "a", Status.FAILED, 404, 1, "HTTP 404: NotFound", 3.0))
    state = dict.fromkeys(Status, 0) | {Status.FAILED: 1}
    result = RunResult(tally, state, 0, 2.0, True, "in.jsonl.ledger.jsonl", input="in.jsonl")
    out = io.StringIO()
    print_summary(Console(file=out, width=200), result, command=["bulkpatch", "run", "in.jsonl"])
    text = out.getvalue()
    assert "resume with: bulkpatch run in.jsonl" in text
    assert "retry failed rows: bulkpatch run in.jsonl --retry-failed" in text
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
