"""What the memory refuses, survives and repairs: files that are not ours, hand edits, disks that
fill up, runs refused before they began."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest
from helpers import API, NamesApi, write
from memory_api import BASE, Api, inventory, night

from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError, LedgerError
from bulkpatch.http.transport import Response
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import iter_records
from bulkpatch.records.ledger_file import open_locked
from bulkpatch.records.memory import Memory
from bulkpatch.records.memory_view import describe
from bulkpatch.records.target import Target
from bulkpatch.testing import MockTransport

T = Target("PATCH", BASE, "/w/{id}", {})


# --- files that are not a memory, and a memory that cannot be written ---------------------------


def _cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from bulkpatch.cli.main import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_state_on_another_programs_database_or_garbage_is_one_line_and_changes_nothing(
    tmp_path: Path,
) -> None:
    other = tmp_path / "app.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE runs (id INTEGER, started TEXT)")
    db.execute("INSERT INTO runs VALUES (1, 'yesterday')")
    db.commit()
    db.close()
    garbage = write(tmp_path / "junk.db", b"\x00\x01 not sqlite " * 100)
    before = other.read_bytes(), garbage.read_bytes()
    for path in (other, garbage):
        code, out = _cli("state", str(path))
        assert code == 2 and out.count("\n") == 1 and "Traceback" not in out, out
        code, out = _cli("state", str(path), "--gone")
        assert code == 2 and "Traceback" not in out, out
    assert (other.read_bytes(), garbage.read_bytes()) == before
    code, out = _cli("state", str(other), "--failing", "99999999999999999999")
    assert code == 2 and "Traceback" not in out


def test_a_hand_edited_run_line_is_shown_not_a_traceback(tmp_path: Path) -> None:
    state = tmp_path / "s.db"
    Memory(str(state), T, input_name="x").close("finished", {"ok": 1}, complete=True)
    db = sqlite3.connect(state)
    db.execute("UPDATE runs SET started = 'last tuesday', ok = 'many'")
    db.commit()
    db.close()
    code, out = _cli("state", str(state))
    assert code == 0 and "Traceback" not in out and "last tuesday" not in out, out
    code, out = _cli("state", str(state), "--json")
    assert code == 0 and orjson.loads(out)["runs"][0]["started"] == "last tuesday"


@pytest.mark.parametrize("same", ["ledger", "input"])
def test_a_state_that_is_the_ledger_or_the_input_is_refused_before_anything(
    tmp_path: Path, same: str
) -> None:
    source = inventory(tmp_path / "in.csv", {"w1": "a"})
    target = f"{source}.ledger.jsonl" if same == "ledger" else str(source)
    before = source.read_bytes()
    with pytest.raises(ConfigError, match="itself"):
        RunOptions(input=str(source), base_url=BASE, state=target)
    assert source.read_bytes() == before and not Path(f"{source}.ledger.jsonl").exists()


async def test_a_memory_that_cannot_be_written_stops_the_run_with_the_ledger_closed(tmp_path: Path) -> None:
    api = Api()
    source = inventory(tmp_path / "in.csv", {f"w{i}": "a" for i in range(2000)})
    opts = RunOptions(input=str(source), base_url=BASE, state=str(tmp_path / "s.db"), concurrency=4)
    run = Run(opts, transport=api.transport)
    real_write = Memory._write
    writes = 0

    def failing_write(self: Memory, pending: list[str] | None) -> int:
        nonlocal writes
        writes += 1
        if writes > 3:  # the disk fills up mid-run
            self.error = LedgerError(f"cannot write the memory {self.path}: database or disk is full")
            raise self.error
        return real_write(self, pending)

    Memory._write = failing_write  # type: ignore[method-assign]
    try:
        with pytest.raises(LedgerError, match="disk is full"):
            await run.execute()
    finally:
        Memory._write = real_write  # type: ignore[method-assign]
    rows = [r for r in iter_records(f"{source}.ledger.jsonl") if r["type"] == "row"]
    assert 0 < len(rows) < 2000 and len(api.sent) >= len(rows)  # closed, readable, no row claimed unsent
    again = await night(api, source, tmp_path / "s.db")  # the disk has room again: the rest goes out
    assert again.exit_code == 0 and set(api.store) == {f"w{i}" for i in range(2000)}


# --- edges: files that are not ours, busy memories, what counts as failing -----------------------


async def test_state_refuses_an_sqlite_database_that_is_not_a_state(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    other = tmp_path / "app.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (id INTEGER, email TEXT)")
    db.commit()
    db.close()
    api = NamesApi()
    with pytest.raises(ConfigError):
        await Run(
            RunOptions(input=str(source), base_url=API, state=str(other)), transport=MockTransport(api)
        ).execute()
    db = sqlite3.connect(other)
    tables = sorted(name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    db.close()
    assert tables == ["users"] and api.sent == []


async def test_a_run_refused_for_a_busy_state_does_not_rotate_the_ledger(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    state = str(tmp_path / "sync.db")
    api = NamesApi()
    await Run(
        RunOptions(input=str(source), base_url=API, state=state), transport=MockTransport(api)
    ).execute()
    write(source, "workload_id,name\nw1,a\nw2,b\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    holder = Memory(state, Target("PATCH", API, "/other/{id}", {}), input_name="elsewhere.csv")
    try:
        with pytest.raises(ConfigError):
            await Run(
                RunOptions(input=str(source), base_url=API, state=state), transport=MockTransport(api)
            ).execute()
    finally:
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


async def test_a_key_whose_last_row_succeeded_is_not_listed_failing(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,bad\nw1,good\n")
    state = str(tmp_path / "sync.db")
    api = NamesApi(refuse={"bad": 422})
    await Run(
        RunOptions(input=str(source), base_url=API, state=state), transport=MockTransport(api)
    ).execute()
    assert api.names == {"w1": "good"}
    assert describe(state)["failing"] == []


async def test_the_state_counts_the_rows_sent(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\n")
    opts = RunOptions(input=str(source), base_url=API, state=str(tmp_path / "s.db"))
    await Run(opts, transport=MockTransport(lambda _: Response(204))).execute()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT sent, requests, ok FROM runs").fetchall() == [(2, 2, 2)]
    db.close()


@pytest.mark.parametrize("table", ["runs", "pending"])
def test_a_database_whose_tables_share_our_names_is_refused_unchanged(tmp_path: Path, table: str) -> None:
    other = tmp_path / "app.db"
    db = sqlite3.connect(other)
    db.execute(f"CREATE TABLE {table} (job TEXT, status TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(ConfigError, match="something else"):
        Memory(str(other), T, input_name="x")
    assert other.read_bytes() == before and not Path(f"{other}-wal").exists()


@pytest.mark.parametrize(
    ("edit", "refused"),
    [
        ("UPDATE meta SET value = 'zz' WHERE name = 'salt'", True),
        ("UPDATE meta SET value = '99' WHERE name = 'version'", True),
        ("INSERT INTO pending (target, run_id, keys) VALUES (1, 1, 'garbage')", True),
        ("INSERT INTO pending (target, run_id, keys) VALUES (1, 1, '[1,2,{}]')", True),
        ("UPDATE runs SET ended = NULL, ledger_offset = 'abc'", True),
        ("UPDATE keys SET fp = 'zzzz'", False),
    ],
)
async def test_a_hand_edited_memory_is_one_line_or_proves_nothing(
    tmp_path: Path, edit: str, refused: bool
) -> None:
    api = Api()
    state = tmp_path / "s.db"
    source = inventory(tmp_path / "in.csv", {"w1": "a"})
    await night(api, source, state)
    db = sqlite3.connect(state)
    db.execute(edit)
    db.commit()
    db.close()
    if refused:
        with pytest.raises(ConfigError, match=r"s\.db") as caught:
            await night(api, source, state)
        assert "\n" not in str(caught.value)
    else:
        result = await night(api, source, state)
        assert result.exit_code == 0 and api.sent == ["w1"]  # a broken fingerprint proves nothing


async def test_a_run_refused_for_a_busy_ledger_leaves_no_phantom_run(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    state = str(tmp_path / "s.db")
    api = NamesApi()
    await Run(
        RunOptions(input=str(source), base_url=API, state=state), transport=MockTransport(api)
    ).execute()
    held = open_locked(f"{source}.ledger.jsonl", os.O_WRONLY | os.O_APPEND, "ledger", lambda: "a test")
    try:
        with pytest.raises(ConfigError, match="in use"):
            await Run(
                RunOptions(input=str(source), base_url=API, state=state), transport=MockTransport(api)
            ).execute()
    finally:
        os.close(held)
    runs = describe(state)["runs"]
    assert [r["outcome"] for r in runs] == ["finished"]  # was: a second run, "did not end", then "died"
