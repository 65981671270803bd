"""The consoles the CLI makes: NO_COLOR (https://no-color.org) means no escape sequence at all."""

from __future__ import annotations

import io

import pytest
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
