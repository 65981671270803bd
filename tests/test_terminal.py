"""The command's streams and consoles (cli/terminal.py): closed stdin or stdout, a reader that goes
away, and NO_COLOR (https://no-color.org): no escape sequence at all."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    ENV,
    ThreadedMock,
    fleet_csv,
    ledger_rows,
    spawn,
)
from rich.console import Console

from bulkpatch.cli.display import print_summary
from bulkpatch.cli.terminal import Stdout, stderr_console
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.results import RunResult
from bulkpatch.records.stats import Tally


def styled_summary(console: Console) -> str:
    tally = Tally()
    tally.add(RowResult(1, 2, "w1", Status.FAILED, 404, 1, "HTTP 404: NotFound", 3.0))
    state = dict.fromkeys(Status, 0) | {Status.FAILED: 1}
    console.file = io.StringIO()
    print_summary(console, RunResult(tally, state, 0, 1.0, False, "a.ledger"), command=["bulkpatch"])
    console.print("[red]red[/] [bold]bold[/]")
    return console.file.getvalue()


@pytest.mark.parametrize("make", [Stdout, stderr_console])
def test_no_color_leaves_no_escape_sequence_even_when_colour_is_forced(
    monkeypatch: pytest.MonkeyPatch, make: type[Console]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # as a CI runner may set it
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in styled_summary(make())  # the test can see colour when there is some
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in styled_summary(make())


def test_an_empty_no_color_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("NO_COLOR", "")
    assert "\x1b[" in styled_summary(Stdout())


@pytest.mark.parametrize("closed", [0, 1])
@pytest.mark.slow
def test_a_closed_stdin_or_stdout_ends_with_a_proper_status(
    tmp_path: Path, api: ThreadedMock, closed: int
) -> None:
    """Issue 9.8: `>&-` / `<&-` ended in `uv__close: Assertion` and exit 134."""
    source = fleet_csv(tmp_path, 50, "piped")
    script = (
        f"import os, runpy, sys; os.close({closed}); sys.argv = ['bulkpatch', *sys.argv[1:]];"
        " runpy.run_module('bulkpatch', run_name='__main__')"
    )
    done = bulkpatch_raw(["-c", script, "run", str(source), "--base-url", api.url])
    assert done.returncode == 0, done.stderr
    assert len(ledger_rows(f"{source}.ledger.jsonl")) == 50


def bulkpatch_raw(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, *args], env=ENV, capture_output=True, timeout=120)


@pytest.mark.slow
def test_a_reader_that_goes_away_does_not_change_the_exit_status(tmp_path: Path, api: ThreadedMock) -> None:
    source = fleet_csv(tmp_path, 50, "piped")
    proc = spawn("run", str(source), "--base-url", api.url)
    assert proc.stdout is not None
    proc.stdout.close()  # `| head -0`: nobody reads the summary
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
