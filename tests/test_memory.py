"""The memory: what was last applied per target and key; nightly syncs send only changes."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from helpers import FakeClock, ThreadedMock, write
from helpers import spawn_run as _run
from memory_api import BASE, Api, inventory, night

from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError
from bulkpatch.mock import MockConfig
from bulkpatch.mock.store import sample_workloads
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult, Status, iter_records
from bulkpatch.records.memory import Memory
from bulkpatch.records.memory_view import describe
from bulkpatch.records.results import RunResult
from bulkpatch.records.target import Target


async def test_nightly_sync_sends_only_changes_and_heals_failures(tmp_path: Path) -> None:
    api = Api()
    state = tmp_path / "sync.db"
    names = {f"w{i}": f"n{i}" for i in range(200)}
    api.refuse = {"w7"}
    first = await night(api, inventory(tmp_path / "inventory.csv", names), state)
    assert len(api.sent) == 200 and first.exit_code == 1  # w7 failed

    # Night 2: the same file name, 2 rows changed, w7 fixed on the server side.
    api.refuse = set()
    names |= {"w3": "changed", "w150": "changed"}
    second = await night(api, inventory(tmp_path / "inventory.csv", names), state)
    assert sorted(api.sent) == ["w150", "w3", "w7"]  # the changes, and yesterday's failure
    assert second.tally.by_status[Status.UNCHANGED] == 197  # proved applied by the memory
    assert second.exit_code == 0 and second.archived_ledger is not None  # the old ledger kept
    assert api.store["w7"] == "n7" and api.store["w3"] == "changed"

    # Night 3: nothing changed: nothing sent, exit 0.
    third = await night(api, inventory(tmp_path / "inventory.csv", names), state)
    assert api.sent == [] and third.exit_code == 0
    assert third.already_done == 200  # the same input: its ledger resumes, and has them all

    # Independent of row order and file name.
    shuffled = dict(reversed(list(names.items())))
    other = await night(api, inventory(tmp_path / "other-name.csv", shuffled), state)
    assert api.sent == [] and other.tally.by_status[Status.UNCHANGED] == 200  # the state knew

    # --full sends everything and refreshes the state.
    await night(api, inventory(tmp_path / "inventory.csv", names), state, full=True)
    assert len(api.sent) == 200


async def test_the_state_never_claims_a_failed_request_applied(tmp_path: Path) -> None:
    api = Api()
    api.refuse = {"w1"}
    state = tmp_path / "sync.db"
    await night(api, inventory(tmp_path / "in.csv", {"w1": "a", "w2": "b"}), state)
    db = sqlite3.connect(state)
    applied = {k for (k,) in db.execute("SELECT key FROM keys WHERE fp IS NOT NULL")}
    failing = dict(db.execute("SELECT key, error FROM keys WHERE status IS NOT NULL").fetchall())
    runs = db.execute("SELECT outcome, ok, failed FROM runs").fetchall()
    db.close()
    assert applied == {"w2"} and set(failing) == {"w1"} and "HTTP 500" in failing["w1"]
    assert runs == [("finished", 1, 1)]
    found = describe(str(state))
    target = f"PATCH {BASE}/api/workload_management/v5/workloads/{{workload_id}}"
    assert found["failing"][0]["key"] == "w1"
    assert [(t["target"], t["applied"], t["failing"]) for t in found["targets"]] == [(target, 1, 1)]


async def test_a_key_twice_in_one_input_is_never_taken_for_unchanged(tmp_path: Path) -> None:
    api = Api()
    state = tmp_path / "sync.db"
    await night(api, inventory(tmp_path / "a.csv", {"w1": "NEW"}), state)
    # Tonight: w1 goes OLD then back to NEW. The second row equals what was applied yesterday,
    # but OLD lands first: NEW must be sent again or the server ends with OLD.
    write(tmp_path / "b.csv", "workload_id,name\nw1,OLD\nw1,NEW\n")
    await night(api, tmp_path / "b.csv", state)
    assert api.sent == ["w1", "w1"] and api.store["w1"] == "NEW"


T = Target("PATCH", BASE, "/w/{id}", {})


def test_one_run_at_a_time_per_state_file(tmp_path: Path) -> None:
    first = Memory(str(tmp_path / "s.db"), T, input_name="x")
    with pytest.raises(ConfigError, match="in use by another bulkpatch run"):
        Memory(str(tmp_path / "s.db"), T, input_name="x")
    first.close()
    Memory(str(tmp_path / "s.db"), T, input_name="x").close()


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    not_db = write(tmp_path / "notes.txt", "precious notes\n" * 100)
    with pytest.raises(ConfigError, match="not a bulkpatch memory database"):
        Memory(str(not_db), T, input_name="x")
    assert not_db.read_text() == "precious notes\n" * 100


def test_state_writes_are_batched_and_flushed_on_close(tmp_path: Path) -> None:
    clock = FakeClock()
    state = Memory(str(tmp_path / "s.db"), T, input_name="x", commit_every=1.0, clock=clock)
    state.record(RowResult(1, 2, "w1", Status.OK, 204, 1, fp=5))
    peek = sqlite3.connect(tmp_path / "s.db")
    assert peek.execute("SELECT count(*) FROM keys").fetchone() == (0,)  # not yet committed
    clock.now += 1.0
    state.record(RowResult(2, 3, "w2", Status.OK, 204, 1, fp=6))
    assert peek.execute("SELECT count(*) FROM keys").fetchone() == (2,)
    state.close("finished", {"ok": 2})
    peek.close()
    again = Memory(str(tmp_path / "s.db"), T, input_name="x")
    assert again.lookup(["w1", "w2", "w3"]) == {"w1": (5, False, 0), "w2": (6, False, 0)}
    again.close()


# --- resume by content (11.1) -----------------------------------------------------------------


@pytest.mark.slow
async def test_a_row_changed_past_the_first_mib_is_sent_not_skipped(tmp_path: Path) -> None:
    """11.1: same name, same size, rows changed after the first MiB: 0 sent, exit 0, before."""
    names = {f"w{i:06d}": f"name-{i:06d}-" + "x" * 40 for i in range(30_000)}  # ~1.8 MB
    source = inventory(tmp_path / "big.csv", names)
    api = Api()
    opts = RunOptions(input=str(source), base_url=BASE, concurrency=32)
    await Run(opts, transport=api.transport).execute()
    size = source.stat().st_size
    for i in range(29_950, 30_000):
        names[f"w{i:06d}"] = f"NAME-{i:06d}-" + "y" * 40  # same length
    inventory(source, names)
    assert source.stat().st_size == size
    api.transport.requests.clear()
    result = await Run(opts, transport=api.transport).execute()
    assert len(api.sent) == 50 and result.exit_code == 0 and result.changed == 50
    assert result.archived_ledger is not None and result.tally.by_status[Status.UNCHANGED] == 29_950
    assert all(api.store[f"w{i:06d}"].startswith("NAME") for i in range(29_950, 30_000))


async def test_different_stdin_content_against_an_old_ledger_is_sent(tmp_path: Path) -> None:
    """11.1: piped input, a completely different CSV, same ledger: 2,000 'already done' before."""
    ledger = tmp_path / "l.jsonl"
    api = Api()

    async def piped(names: dict[str, str]) -> RunResult:
        opts = RunOptions(input="-", format="csv", base_url=BASE, ledger=str(ledger))
        rows = [{"workload_id": k, "name": v} for k, v in names.items()]
        api.transport.requests.clear()
        return await Run(opts, transport=api.transport, rows=rows).execute()

    await piped({f"w{i}": "a" for i in range(300)})
    second = await piped({f"v{i}": "b" for i in range(300)})
    # Other keys: sent; nothing "changed" (the memory never applied anything to them).
    assert len(api.sent) == 300 and second.changed == 0 and second.already_done == 0
    third = await piped({f"v{i}": "b" for i in range(300)})
    assert api.sent == [] and third.already_done == 300


# --- processes: one writer, kill -9 with a state ------------------------------------------------


def _wait_for_rows(ledger: Path, proc: subprocess.Popen[bytes], at_least: int) -> None:
    deadline = time.monotonic() + 60
    while sum(1 for r in (iter_records(ledger) if ledger.exists() else []) if r["type"] == "row") < at_least:
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_second_run_on_the_same_ledger_is_refused_and_sends_nothing(tmp_path: Path) -> None:
    workloads = list(sample_workloads(400))
    source = inventory(tmp_path / "fleet.csv", {w["id"]: f"x-{i}" for i, w in enumerate(workloads)})
    with ThreadedMock(MockConfig(require_auth=False, workloads=400, latency_ms=20)) as api:
        first = _run(source, api.url, "--concurrency", "2")
        _wait_for_rows(Path(f"{source}.ledger.jsonl"), first, 1)
        second = _run(source, api.url)
        _, err = second.communicate(timeout=60)
        first.terminate()
        first.communicate(timeout=60)
        patches = api.api.counters.patches
    assert second.returncode == 2, err
    assert b"in use by another bulkpatch run (pid" in err and err.count(b"\n") == 1
    assert max(patches.values()) == 1  # nothing was sent twice


@pytest.mark.slow
def test_kill_9_mid_sync_then_the_same_command_applies_every_row(tmp_path: Path) -> None:
    rows = 4000
    workloads = list(sample_workloads(rows))
    seed = tmp_path / "seed.jsonl"
    seed.write_bytes(b"".join(orjson.dumps(w) + b"\n" for w in workloads))
    source = inventory(tmp_path / "fleet.csv", {w["id"]: f"moved-{i}" for i, w in enumerate(workloads)})
    state = tmp_path / "sync.db"
    ledger = Path(f"{source}.ledger.jsonl")
    with ThreadedMock(MockConfig(require_auth=False, seed_file=str(seed), latency_ms=2)) as api:
        proc = _run(source, api.url, "--concurrency", "32", "--state", str(state))
        _wait_for_rows(ledger, proc, rows * 4 // 10)
        proc.kill()
        proc.communicate(timeout=60)
        again = _run(source, api.url, "--concurrency", "32", "--state", str(state))
        _, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        for i, w in enumerate(workloads):
            assert api.api.store.get(w["id"])["name"] == f"moved-{i}"  # type: ignore[index]
        twice = sum(n - 1 for n in api.api.counters.patches.values())
        db = sqlite3.connect(state)
        applied = db.execute("SELECT count(fp) FROM keys").fetchone()[0]
        db.close()
        assert applied == rows  # state and ledger agree: every key applied
        sent = sum(api.api.counters.patches.values())
        third = _run(source, api.url, "--state", str(state))
        _, err = third.communicate(timeout=60)
        assert third.returncode == 0, err
        assert sum(api.api.counters.patches.values()) == sent  # nothing left to send
    assert twice <= 32, twice  # at most the rows in flight at the kill


def test_a_batch_is_pending_until_every_key_of_it_has_its_answer(tmp_path: Path) -> None:
    clock = FakeClock()
    state = Memory(str(tmp_path / "s.db"), T, input_name="x", commit_every=1.0, clock=clock)
    state.intend(["w1", "w2"])
    peek = sqlite3.connect(tmp_path / "s.db")
    assert peek.execute("SELECT keys FROM pending").fetchall() == [('["w1","w2"]',)]  # before any send
    state.record(RowResult(1, 2, "w1", Status.OK, 204, 1, fp=5))
    state.commit()
    assert peek.execute("SELECT count(*) FROM pending").fetchone() == (1,)  # w2 has no answer yet
    state.close()  # killed or stopped here: w2's request may have landed
    again = Memory(str(tmp_path / "s.db"), T, input_name="x")
    assert again.lookup(["w1", "w2"]) == {"w1": (5, False, 0), "w2": (0, True, 0)}  # w2: no proof
    assert peek.execute("SELECT status FROM keys WHERE key = 'w2'").fetchall() == [("pending",)]
    assert peek.execute("SELECT count(*) FROM pending").fetchone() == (0,)
    again.record(RowResult(1, 2, "w2", Status.OK, 204, 1, fp=6))
    again.close("finished")
    assert peek.execute("SELECT count(status) FROM keys").fetchone() == (0,)
    peek.close()
