"""The command's streams (cli/terminal.py): closed stdin or stdout, a reader that goes away."""

from __future__ import annotations

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
