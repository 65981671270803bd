"""What trying the README as a new user turned up, each replayed."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
from pathlib import Path

import pytest
from helpers import write
from rich.console import Console

import bulkpatch
from bulkpatch.cli.display import Progress, print_summary
from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError, CredentialsRejected
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.results import RunResult, RunStatus
from bulkpatch.records.resume import RetryFailed
from bulkpatch.records.stats import Tally
from bulkpatch.testing import MockTransport, Response, SentRequest

BASE = "http://api.test"


async def test_rows_without_a_key_are_sent_side_by_side(tmp_path: Path) -> None:
    """POSTs to a collection (no {field} in the path) were sent one at a time, all keyed ''."""
    source = write(tmp_path / "p.csv", "name\n" + "".join(f"n{i}\n" for i in range(40)))
    transport = MockTransport(lambda _: Response(201))
    opts = RunOptions(input=str(source), base_url=BASE, method="POST", path="/things", schema="any")  # type: ignore[arg-type]
    result = await Run(opts, transport=transport).execute()
    assert transport.max_in_flight > 1 and result.repeated_keys == 0 and result.exit_code == 0


def test_state_and_shards_need_a_key() -> None:
    with pytest.raises(ConfigError, match=r"need a --path with a \{field\}"):
        RunOptions(input="x.csv", base_url=BASE, path="/things", state="s.db")


async def test_the_runs_headers_reach_a_transport_of_the_callers(tmp_path: Path) -> None:
    transport = MockTransport(lambda request: Response(204))
    await bulkpatch.run_async(
        [{"workload_id": "w1", "name": "a"}],
        base_url=BASE,
        ledger=os.devnull,
        transport=transport,
        headers={"X-Tenant": "t1"},
        token="tok-123",
    )
    sent: SentRequest = transport.requests[0]
    assert sent.headers["X-Tenant"] == "t1" and sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Authorization"] == "Bearer tok-123"


def test_the_library_takes_the_command_lines_spellings() -> None:
    opts = RunOptions(input="x.csv", base_url=BASE, retry_failed="transient", shard="1/4")  # type: ignore[arg-type]
    assert opts.retry_failed is RetryFailed.TRANSIENT and opts.shard == (1, 4)
    with pytest.raises(ConfigError, match="'sometimes' is not a valid RetryFailed"):
        RunOptions(input="x.csv", base_url=BASE, retry_failed="sometimes")  # type: ignore[arg-type]


async def test_the_state_counts_the_rows_sent(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\n")
    opts = RunOptions(input=str(source), base_url=BASE, state=str(tmp_path / "s.db"))
    await Run(opts, transport=MockTransport(lambda _: Response(204))).execute()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT sent, requests, ok FROM runs").fetchall() == [(2, 2, 2)]
    db.close()


async def test_no_credentials_at_all_says_so(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    with pytest.raises(CredentialsRejected, match="no credentials are set"):
        await Run(
            RunOptions(input=str(source), base_url=BASE), transport=MockTransport(lambda _: Response(401))
        ).execute()


def test_a_pipe_without_a_ledger_is_refused_like_stdin() -> None:
    read, write_end = os.pipe()
    try:
        with pytest.raises(ConfigError, match=r"a pipe.*needs --ledger"):
            RunOptions(input=f"/dev/fd/{read}", base_url=BASE, format="csv")
    finally:
        os.close(read)
        os.close(write_end)


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
