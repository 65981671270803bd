"""export, plan and verify at the command line: a reader that goes away changes no outcome."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import ThreadedMock, write

from bulkpatch.mock import MockConfig
from bulkpatch.mock.store import sample_workloads

ENV = {k: v for k, v in os.environ.items() if not k.startswith("BULKPATCH_")}


@pytest.mark.slow
@pytest.mark.parametrize(("command", "status"), [("plan", 0), ("verify", 1)])
def test_a_closed_stdout_keeps_the_exit_status_and_shows_no_traceback(
    tmp_path: Path, command: str, status: int
) -> None:
    """``bulkpatch plan … | head -1``: here the reader is gone before the first line."""
    rows = "".join(f"{w['id']},renamed-{i}\n" for i, w in enumerate(sample_workloads(300)))
    source = write(tmp_path / "in.csv", "workload_id,name\n" + rows)
    with ThreadedMock(MockConfig(require_auth=False, workloads=300)) as mock:
        read, written = os.pipe()
        os.close(read)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bulkpatch", command, str(source), "--base-url", mock.url, "-q"],
                stdout=written,
                stderr=subprocess.PIPE,
                env=ENV,
                timeout=120,
            )
        finally:
            os.close(written)
    assert done.returncode == status, done.stderr.decode()
    assert done.stderr == b""
    if command == "plan":
        assert (tmp_path / "in.before.csv").read_text().count("\n") == 301
