"""The cron recipe: the README's line is deploy/crontab.example's, and it works under cron's bare
environment (a PATH without the virtualenv, an env file of plain NAME=value lines)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cron_line(text: str) -> str:
    lines = [line for line in text.splitlines() if re.match(r"\d+ \d+ \* \* \*\s", line)]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_readme_and_the_example_give_the_same_line_with_an_absolute_bulkpatch() -> None:
    readme = cron_line((ROOT / "README.md").read_text())
    assert readme == cron_line((ROOT / "deploy" / "crontab.example").read_text())
    command = readme.split("&& ")[-1].split()[0]
    assert command.startswith("/") and command.endswith("/bin/bulkpatch")
    assert "must *export*" not in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_the_line_runs_under_crons_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "bulkpatch.env"
    env_file.write_text("BULKPATCH_BASE_URL=http://127.0.0.1:9\n")
    source = tmp_path / "in.csv"
    source.write_text("workload_id,name\nw1,a\n")
    bulkpatch = shutil.which("bulkpatch", path=str(Path(sys.executable).parent))
    assert bulkpatch is not None
    line = cron_line((ROOT / "deploy" / "crontab.example").read_text())
    command = line.split(None, 5)[5]
    prefix, _, run = command.partition(" && /")
    run = "/" + run
    # The same prefix, then this venv's bulkpatch on a dry run of a small input.
    shell = f"{prefix.replace('/etc/bulkpatch.env', str(env_file))} && {bulkpatch} run {source} --dry-run"
    done = subprocess.run(
        ["/bin/sh", "-c", shell],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "PATCH http://127.0.0.1:9/api/" in done.stdout  # the base URL came from the env file
    assert run.split()[0].endswith("/bin/bulkpatch")
