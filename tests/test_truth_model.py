"""The one rule (#17) against a model of the API: example runs of the issue's bullets, then a
stateful property test that mixes edits, faults, stops, rollbacks, hotfixes and tenants.

After every clean run (finished, nothing failing at the API, with ``--state``, ``--retry-failed
all`` or ``--full``) each key of its input holds its last row's value; in every run a row
recorded ``unchanged`` equals what the API held for its key at that moment, and the rows of a key
reach the API in input order; after a stop (Ctrl-C, or a death the next run replays), the same
command applies again at most ``concurrency`` of the rows the stopped run applied.
The CI profile is small; ``HYPOTHESIS_PROFILE=long`` (or ``python bench/truth_model.py``) runs
a long one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from truth_model import ModelApi, Outcome, Rows, assert_clean, in_input_order, names, run_rows

from bulkpatch.records.memory import DEFAULT_NAME

KEYS = ["k0", "k1", "k2", "k3"]
VALUES = ["a", "b", "c"]

settings.register_profile(
    "truth-ci",
    max_examples=100,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "truth-long",
    max_examples=int(os.environ.get("TRUTH_MODEL_EXAMPLES", "1500")),
    stateful_step_count=int(os.environ.get("TRUTH_MODEL_STEPS", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = "truth-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "truth-ci"


# --- the bullets, one run at a time ---------------------------------------------------------


async def test_a_hotfix_from_another_file_is_overwritten_back(tmp_path: Path) -> None:
    api = ModelApi()
    inv: Rows = [("k1", "a"), ("k2", "a")]
    await run_rows(api, tmp_path, "inv.csv", inv)
    await run_rows(api, tmp_path, "hotfix.csv", [("k1", "b")])
    again = await run_rows(api, tmp_path, "inv.csv", inv)
    assert again.applied == [("k1", "a")]
    assert_clean(again, api, inv)


async def test_a_later_row_of_an_earlier_run_voids_the_proof(tmp_path: Path) -> None:
    api = ModelApi()
    await run_rows(api, tmp_path, "night1.csv", [("k1", "a"), ("k1", "b")], state=True)
    night2 = await run_rows(api, tmp_path, "night2.csv", [("k1", "a")], state=True)
    assert night2.applied == [("k1", "a")]
    assert_clean(night2, api, [("k1", "a")])


@pytest.mark.parametrize("status", [503, 422])
async def test_failed_keys_heal_with_state(tmp_path: Path, status: int) -> None:
    api = ModelApi(failing={"k1": status})
    inv: Rows = [("k1", "a"), ("k2", "a")]
    first = await run_rows(api, tmp_path, "inv.csv", inv, state=True)
    assert first.result is not None and first.result.exit_code == 1 and "k1" not in api.store()
    api.failing.clear()
    healed = await run_rows(api, tmp_path, "inv.csv", inv, state=True)
    assert healed.applied == [("k1", "a")]
    assert_clean(healed, api, inv)


async def test_another_tenants_rows_are_sent(tmp_path: Path) -> None:
    api = ModelApi()
    inv: Rows = [("k1", "a"), ("k2", "b")]
    await run_rows(api, tmp_path, "inv.csv", inv)
    other = await run_rows(api, tmp_path, "inv.csv", inv, tenant="t2")
    assert sorted(other.applied) == sorted(inv)
    assert_clean(other, api, inv, tenant="t2")


async def test_history_stamps_applied_run_only_on_a_2xx(tmp_path: Path) -> None:
    api = ModelApi()
    await run_rows(api, tmp_path, "inv.csv", [("k1", "a")], state=True)
    api.failing["k1"] = 503
    await run_rows(api, tmp_path, "inv.csv", [("k1", "b")], state=True)

    def stamps() -> tuple[object, ...]:
        db = sqlite3.connect(tmp_path / DEFAULT_NAME)
        try:
            row = db.execute("SELECT applied_run, status, http_status, outcome_run FROM keys").fetchone()
        finally:
            db.close()
        return tuple(row)

    assert stamps() == (1, "failed", 503, 2)
    api.failing.clear()
    await run_rows(api, tmp_path, "inv.csv", [("k1", "b")], state=True)
    assert stamps() == (3, None, None, 3) and names(api) == {"k1": "b"}


async def test_a_stop_with_an_answer_lost_resends_only_what_was_in_flight(tmp_path: Path) -> None:
    api = ModelApi()
    inv: Rows = [(f"k{i}", "a") for i in range(8)]
    stopped = await run_rows(api, tmp_path, "inv.csv", inv, state=True, cut_after=3, lost=True, concurrency=2)
    assert stopped.stopped and stopped.result is not None and stopped.result.exit_code == 130
    again = await run_rows(api, tmp_path, "inv.csv", inv, state=True, concurrency=2)
    twice = set(stopped.applied) & set(again.applied)
    assert len(twice) <= 2
    assert_clean(again, api, inv)


# --- found by the machine ---------------------------------------------------------------------------


@pytest.mark.parametrize("die", [False, True], ids=["ctrl-c", "killed"])
async def test_a_later_row_in_flight_at_a_stop_voids_the_proof_of_an_earlier_row(
    tmp_path: Path, die: bool
) -> None:
    api = ModelApi()
    # k1=a is answered; k1=b reaches the API (applied), its answer never comes: Ctrl-C, or the
    # run dies there (the next run replays its ledger: the same miss).
    stopped = await run_rows(
        api, tmp_path, "inv.csv", [("k1", "a"), ("k1", "b")], state=True, cut_after=1, lost=True, die=die
    )
    assert stopped.stopped and names(api) == {"k1": "b"}
    hotfix = await run_rows(api, tmp_path, "hotfix.csv", [("k1", "a")], state=True)
    assert hotfix.applied == [("k1", "a")], hotfix.unproved  # today: recorded unchanged, b stays
    assert names(api) == {"k1": "a"}


async def test_a_dead_runs_ledger_kept_under_a_dated_name_is_still_replayed(tmp_path: Path) -> None:
    api = ModelApi()
    # Tenant t2: k1=a answered, k1=b applied with its answer lost, and the run dies.
    await run_rows(
        api, tmp_path, "inv.csv", [("k1", "a"), ("k1", "b")], tenant="t2", cut_after=1, lost=True, die=True
    )
    # Another tenant's run of an edited inv.csv keeps the dead run's ledger under a dated name.
    await run_rows(api, tmp_path, "inv.csv", [("k1", "c")], tenant="t1")
    again = await run_rows(api, tmp_path, "inv.csv", [("k1", "a")], tenant="t2")
    assert again.applied == [("k1", "a")], again.unproved  # was: recorded unchanged, b stayed
    assert names(api, "t2") == {"k1": "a"}


# --- the machine ------------------------------------------------------------------------------------


class TruthMachine(RuleBasedStateMachine):
    """Real runs against ``ModelApi``; see the module docstring for what is checked."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="truth-model-"))
        self.loop = asyncio.new_event_loop()
        self.api = ModelApi()
        self.rows: Rows = []
        self.snapshots: list[Rows] = []
        #: (tenant, concurrency, rows applied) of a stopped run of inv.csv, until anything changes
        self.after_stop: tuple[str, int, list[tuple[str, str]]] | None = None

    def teardown(self) -> None:
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, name: str, rows: Rows, **kw: object) -> Outcome:
        return self.loop.run_until_complete(run_rows(self.api, self.folder, name, rows, **kw))  # type: ignore[arg-type]

    @initialize(
        rows=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)), min_size=1, max_size=6)
    )
    def start(self, rows: Rows) -> None:
        self.rows = list(rows)

    # Edits of the inventory.

    @rule(at=st.integers(0, 10), value=st.sampled_from(VALUES))
    def edit_row(self, at: int, value: str) -> None:
        if self.rows:
            key, _ = self.rows[at % len(self.rows)]
            self.rows[at % len(self.rows)] = (key, value)
            self.after_stop = None

    @rule(at=st.integers(0, 10), older=st.sampled_from(VALUES))
    def repeat_key_with_an_older_value_first(self, at: int, older: str) -> None:
        if self.rows:
            key, _ = self.rows[at % len(self.rows)]
            self.rows.insert(at % len(self.rows), (key, older))
            self.after_stop = None

    @rule(at=st.integers(0, 10))
    def drop_row(self, at: int) -> None:
        if len(self.rows) > 1:
            del self.rows[at % len(self.rows)]
            self.after_stop = None

    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES))
    def add_row(self, key: str, value: str) -> None:
        self.rows.append((key, value))
        self.after_stop = None

    # The API.

    @rule(key=st.sampled_from(KEYS), status=st.sampled_from([503, 422]))
    def fail_key(self, key: str, status: int) -> None:
        self.api.failing[key] = status
        self.after_stop = None

    @rule(key=st.sampled_from(KEYS))
    def recover_key(self, key: str) -> None:
        self.api.failing.pop(key, None)
        self.after_stop = None

    @rule()
    def recover_all(self) -> None:
        self.api.failing.clear()
        self.after_stop = None

    # Runs.

    @rule(
        state=st.booleans(),
        retry_all=st.booleans(),
        tenant=st.sampled_from(["t1", "t1", "t2"]),
        concurrency=st.integers(1, 3),
        full=st.sampled_from([False, False, False, True]),
    )
    def run_inventory(self, state: bool, retry_all: bool, tenant: str, concurrency: int, full: bool) -> None:
        failing = bool(self.api.failing)
        outcome = self.run(
            "inv.csv",
            self.rows,
            state=state,
            retry_all=retry_all,
            tenant=tenant,
            concurrency=concurrency,
            full=full,
        )
        self.snapshots.append(list(self.rows))
        if self.after_stop is not None and self.after_stop[0] == tenant and not failing:
            _, limit, before = self.after_stop
            once = {k for k, n in Counter(k for k, _ in self.rows).items() if n == 1}
            twice = {(k, v) for k, v in before if k in once} & set(outcome.applied)
            assert full or len(twice) <= limit, (twice, limit)
            event("the run after a stop: rows applied twice checked")
        self.after_stop = None
        self.check(outcome, self.rows, tenant, clean=not failing and (state or retry_all or full))

    @rule(
        cut_after=st.integers(0, 3),
        lost=st.booleans(),
        state=st.booleans(),
        tenant=st.sampled_from(["t1", "t2"]),
        concurrency=st.integers(1, 3),
        resume=st.booleans(),
        die=st.booleans(),
    )
    def run_and_stop(
        self, cut_after: int, lost: bool, state: bool, tenant: str, concurrency: int, resume: bool, die: bool
    ) -> None:
        failing = bool(self.api.failing)
        outcome = self.run(
            "inv.csv",
            self.rows,
            state=state,
            tenant=tenant,
            concurrency=concurrency,
            cut_after=cut_after,
            lost=lost,
            die=die,
        )
        assert not outcome.unproved, outcome.unproved
        assert in_input_order(outcome.applied, self.rows), (outcome.applied, self.rows)
        if outcome.stopped:
            event("a run died with a request in flight" if die else "a run stopped with a request in flight")
            self.after_stop = None if failing else (tenant, concurrency, outcome.applied)
            if resume:  # the same command again at once
                self.run_inventory(state, not state, tenant, concurrency, False)
        else:
            self.after_stop = None
            self.check(outcome, self.rows, tenant, clean=False)

    @rule(
        key=st.sampled_from(KEYS),
        value=st.sampled_from(VALUES),
        state=st.booleans(),
        tenant=st.sampled_from(["t1", "t1", "t2"]),
    )
    def hotfix(self, key: str, value: str, state: bool, tenant: str) -> None:
        failing = bool(self.api.failing)
        outcome = self.run("hotfix.csv", [(key, value)], state=state, retry_all=True, tenant=tenant)
        self.after_stop = None
        self.check(outcome, [(key, value)], tenant, clean=not failing)

    @precondition(lambda self: bool(self.snapshots))
    @rule(back=st.integers(0, 10), state=st.booleans())
    def rollback(self, back: int, state: bool) -> None:
        failing = bool(self.api.failing)
        rows = self.snapshots[-1 - back % len(self.snapshots)]
        outcome = self.run("rollback.csv", rows, state=state, retry_all=True)
        self.after_stop = None
        self.check(outcome, rows, "t1", clean=not failing)

    def check(self, outcome: Outcome, rows: Rows, tenant: str, *, clean: bool) -> None:
        assert not outcome.unproved, outcome.unproved
        assert in_input_order(outcome.applied, rows), (outcome.applied, rows)
        if outcome.unchanged:
            event("a run recorded rows unchanged")
        if clean:
            event("a clean run: every key checked")
            assert_clean(outcome, self.api, rows, tenant)

    @invariant()
    def nothing_hangs(self) -> None:
        assert self.api.cut_after is None


TruthMachine.TestCase.settings = settings.get_profile(PROFILE)
TestTruthMachine = pytest.mark.slow(TruthMachine.TestCase)
