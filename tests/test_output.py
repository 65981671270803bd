"""export and plan never write over a file they must not replace: the input, a ledger, a state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import ThreadedMock, write

from bulkpatch.cli.main import cli
from bulkpatch.errors import ConfigError
from bulkpatch.mock import MockConfig
from bulkpatch.mock.store import sample_workloads
from bulkpatch.ops.output import Output

LEDGER_HEADER = '{"type":"header","version":2,"input":{"path":"x.csv"}}\n'


@pytest.fixture
def mock() -> Iterator[ThreadedMock]:
    with ThreadedMock(MockConfig(require_auth=False, workloads=5)) as server:
        yield server


def plan_input(tmp_path: Path) -> Path:
    rows = "".join(f"{w['id']},renamed-{i}\n" for i, w in enumerate(sample_workloads(5)))
    return write(tmp_path / "e.csv", "workload_id,name\n" + rows)


@pytest.mark.parametrize(
    "target",
    [
        "e.csv",  # the input itself
        "./e.csv",
        "link.csv",  # a hard link to it
        "e.csv.ledger.jsonl",  # its ledger
        "other.ledger.jsonl",  # a ledger by name
        "custom.log",  # a ledger by content (--ledger custom.log)
        "state.db",  # a sync state
        "run-before.csv",  # another run's input: it has a ledger
    ],
)
def test_plan_never_overwrites_what_it_did_not_write(
    tmp_path: Path, mock: ThreadedMock, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = plan_input(tmp_path)
    os.link(source, tmp_path / "link.csv")
    write(tmp_path / "e.csv.ledger.jsonl", LEDGER_HEADER)
    write(tmp_path / "other.ledger.jsonl", "")
    write(tmp_path / "custom.log", LEDGER_HEADER)
    (tmp_path / "state.db").write_bytes(b"SQLite format 3\x00" + bytes(100))
    write(tmp_path / "run-before.csv", "workload_id,name\nw,a\n")
    write(tmp_path / "run-before.csv.ledger.jsonl", LEDGER_HEADER)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli,
        ["plan", "e.csv", "--snapshot", target, "--overwrite-snapshot", "--base-url", mock.url],
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    assert "pick another name" in result.stderr or "move it away" in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert mock.api.counters.requests == 0


def test_an_earlier_snapshot_is_still_replaced_on_request(tmp_path: Path, mock: ThreadedMock) -> None:
    source = plan_input(tmp_path)
    snapshot = write(tmp_path / "e.before.csv", "workload_id,name\nold,x\n")
    args = ["plan", str(source), "--base-url", mock.url]
    assert CliRunner().invoke(cli, args).exit_code == 2  # exists: not without the flag
    result = CliRunner().invoke(cli, [*args, "--overwrite-snapshot"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert snapshot.read_text().count("\n") == 6 and "old" not in snapshot.read_text()


def test_a_users_part_file_is_left_alone_and_the_output_is_private(tmp_path: Path) -> None:
    part = write(tmp_path / "out.csv.part", "mine\n")
    with Output(str(tmp_path / "out.csv")) as out:
        out.write(b"a,b\n")
    assert part.read_text() == "mine\n"
    assert (tmp_path / "out.csv").read_bytes() == b"a,b\n"
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.part"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    old = write(tmp_path / "out.jsonl", "old\n")

    def fail_midway() -> None:
        with Output(str(old)) as out:
            out.write(b"new")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_midway()
    assert old.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_export_refuses_a_ledger_or_a_state_but_refreshes_an_input(tmp_path: Path) -> None:
    write(tmp_path / "x.ledger.jsonl", LEDGER_HEADER)
    with pytest.raises(ConfigError, match="is a bulkpatch ledger"):
        Output(str(tmp_path / "x.ledger.jsonl"))
    inventory = write(tmp_path / "inventory.csv", "workload_id\n")
    write(tmp_path / "inventory.csv.ledger.jsonl", LEDGER_HEADER)
    Output(str(inventory))  # the nightly export writes over the input it ran last night


@pytest.mark.parametrize("target", ["a-directory", "/dev/null", "-"])
def test_plan_refuses_a_snapshot_that_is_no_regular_file(
    tmp_path: Path, mock: ThreadedMock, target: str
) -> None:
    source = plan_input(tmp_path)
    (tmp_path / "a-directory").mkdir()
    where = str(tmp_path / target) if target == "a-directory" else target
    args = ["plan", str(source), "--snapshot", where, "--overwrite-snapshot", "--base-url", mock.url]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "--snapshot" in result.stderr and "Traceback" not in result.output
    assert mock.api.counters.requests == 0


def test_an_output_through_a_symbolic_link_replaces_the_file_and_keeps_the_link(tmp_path: Path) -> None:
    real = write(tmp_path / "real.csv", "old\n")
    (tmp_path / "link.csv").symlink_to(real)
    with Output(str(tmp_path / "link.csv")) as out:
        out.write(b"new\n")
    assert (tmp_path / "link.csv").is_symlink() and real.read_text() == "new\n"
