"""Sync state edges (records/sync_state.py): files that are not ours, busy states, what counts as failing.

Kept apart from test_sync_state.py while that file is being rewritten; to be merged into it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import (
    API,
    NamesApi,
    write,
)

from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError
from bulkpatch.options import RunOptions
from bulkpatch.records.sync_state import SyncState, describe
from bulkpatch.testing import MockTransport, Response


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
    holder = SyncState(state, "another run", input_name="elsewhere.csv")
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
