"""The one rule (engine/truth.py) and the issue #17 cases it must get right, end to end."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import ThreadedMock

from bulkpatch.engine.run import Run
from bulkpatch.engine.truth import Verdict, decide
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import Status
from bulkpatch.records.memory import Memory
from bulkpatch.records.memory_view import gone
from bulkpatch.records.results import RunResult
from bulkpatch.records.resume import OK_CODE, UNCHANGED_CODE
from bulkpatch.records.target import Target
from bulkpatch.testing import MockTransport, Response, SentRequest

BASE = "http://api.test"
FAILED_CODE = 2


# --- the rule -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "code", "code_fp", "resend", "sent_before", "verdict"),
    [
        ((7, False), 0, 0, False, False, Verdict.UNCHANGED),  # proved, new to this ledger
        ((7, False), OK_CODE, 7, False, False, Verdict.ALREADY),  # proved, and this ledger says so
        ((7, False), UNCHANGED_CODE, 7, False, False, Verdict.ALREADY),
        ((7, True), OK_CODE, 7, False, False, Verdict.SEND),  # something came after it: no proof
        ((8, False), OK_CODE, 7, False, False, Verdict.SEND),  # another request applied since
        ((8, False), 0, 0, False, False, Verdict.SEND),
        (None, OK_CODE, 7, False, False, Verdict.SEND),  # the ledger alone proves nothing
        ((7, False), OK_CODE, 7, False, True, Verdict.SEND),  # an earlier row of this run went out
        (None, FAILED_CODE, 7, False, False, Verdict.ALREADY),  # failed: stays failed
        (None, FAILED_CODE, 7, True, False, Verdict.SEND),  # --retry-failed / --state
        (None, FAILED_CODE, 6, False, False, Verdict.SEND),  # another request now
    ],
)
def test_a_row_is_skipped_only_on_proof(
    memory: tuple[int, bool] | None,
    code: int,
    code_fp: int,
    resend: bool,
    sent_before: bool,
    verdict: Verdict,
) -> None:
    three = None if memory is None else (*memory, 0)
    assert decide("w1", 7, 5, three, code, code_fp, resend=resend, sent_before=sent_before) is verdict


def test_a_row_without_a_key_has_only_its_ledger_for_proof() -> None:
    assert decide("", 7, 5, None, OK_CODE, 7, resend=False, sent_before=False) is Verdict.ALREADY
    assert decide("", 7, 5, None, 0, 0, resend=False, sent_before=False) is Verdict.SEND


def test_an_earlier_row_of_a_key_proved_overwritten_by_a_later_row_of_this_input_is_done() -> None:
    # Row 5 of this very ledger's input was answered, then row 9 of the same key: proved last.
    assert decide("w1", 7, 5, (8, False, 9), OK_CODE, 7, resend=False, sent_before=False) is Verdict.ALREADY
    # Not when something came after, nor when the later row was not of this ledger, nor without
    # this ledger's own answer to row 5.
    assert decide("w1", 7, 5, (8, True, 9), OK_CODE, 7, resend=False, sent_before=False) is Verdict.SEND
    assert decide("w1", 7, 5, (8, False, 0), OK_CODE, 7, resend=False, sent_before=False) is Verdict.SEND
    assert decide("w1", 7, 5, (8, False, 9), 0, 0, resend=False, sent_before=False) is Verdict.SEND
    assert decide("w1", 7, 9, (8, False, 5), OK_CODE, 7, resend=False, sent_before=False) is Verdict.SEND


# --- the cases, end to end ------------------------------------------------------------------


class Api:
    """Applies PATCHes per tenant (``X-Tenant``); refuses the ids in ``failing`` with a 503."""

    def __init__(self) -> None:
        self.stores: dict[str, dict[str, str]] = {}
        self.failing: set[str] = set()
        self.transport = MockTransport(self.handle)

    def handle(self, request: SentRequest) -> Response:
        key = request.url.rsplit("/", 1)[1]
        if key in self.failing:
            return Response(503, None, b"")
        tenant = request.headers.get("X-Tenant", "")
        self.stores.setdefault(tenant, {})[key] = orjson.loads(request.body or b"{}")["name"]
        return Response(204, None, b"")

    def sent(self) -> list[str]:
        keys = [r.url.rsplit("/", 1)[1] for r in self.transport.requests]
        self.transport.requests.clear()
        return keys


def csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("workload_id,name\n" + "".join(f"{k},{v}\n" for k, v in rows))
    return path


async def run(api: Api, source: Path, **options: Any) -> RunResult:
    opts = RunOptions(input=str(source), base_url=BASE, max_attempts=1, **options)
    return await Run(opts, transport=api.transport).execute()


async def test_a_hotfix_overwritten_back_is_applied_again(tmp_path: Path) -> None:
    api = Api()
    state = str(tmp_path / "s.db")
    inv = csv(tmp_path / "inv.csv", [("k1", "a"), ("k2", "x")])
    await run(api, inv, state=state)
    await run(api, csv(tmp_path / "hotfix.csv", [("k1", "b")]), state=state)
    assert api.stores[""]["k1"] == "b"
    api.sent()
    third = await run(api, inv, state=state)
    assert api.sent() == ["k1"] and api.stores[""]["k1"] == "a" and third.exit_code == 0
    db = sqlite3.connect(state)
    stamps = dict(db.execute("SELECT key, applied_run FROM keys").fetchall())
    db.close()
    assert stamps == {"k1": 3, "k2": 1}  # k2 was not sent by runs 2 and 3: its stamp stays


async def test_without_state_the_memory_beside_the_ledger_sees_a_hotfix_too(tmp_path: Path) -> None:
    api = Api()
    inv = csv(tmp_path / "inv.csv", [("k1", "a")])
    await run(api, inv)
    await run(api, csv(tmp_path / "hotfix.csv", [("k1", "b")]))
    api.sent()
    await run(api, inv)
    assert api.sent() == ["k1"] and api.stores[""]["k1"] == "a"
    assert (tmp_path / "bulkpatch-memory.db").exists()


async def test_a_later_row_of_a_key_voids_an_earlier_proof(tmp_path: Path) -> None:
    api = Api()
    night = tmp_path / "inv.csv"
    await run(api, csv(night, [("K", "a"), ("K", "b")]))
    assert api.stores[""]["K"] == "b"
    api.sent()
    await run(api, csv(night, [("K", "a")]))  # night 2: the file changed, K=a once
    assert api.sent() == ["K"] and api.stores[""]["K"] == "a"


@pytest.mark.parametrize("state", [False, True])
async def test_a_re_run_of_an_input_that_repeats_a_key_sends_nothing(tmp_path: Path, state: bool) -> None:
    """Was: every re-run sent both rows, so the workload flipped to the first value and back."""
    api = Api()
    source = csv(tmp_path / "in.csv", [("k1", "a"), ("k2", "x"), ("k1", "b")])
    extra = {"state": str(tmp_path / "s.db")} if state else {}
    await run(api, source, **extra)
    assert api.stores[""]["k1"] == "b"
    api.sent()
    for _ in range(3):
        again = await run(api, source, **extra)
        assert api.sent() == [] and again.exit_code == 0
    # Edit the later row: both rows go again, in order, and the later value stays.
    csv(source, [("k1", "a"), ("k2", "x"), ("k1", "c")])
    await run(api, source, **extra)
    assert api.sent() == ["k1", "k1"] and api.stores[""]["k1"] == "c"


async def test_failed_keys_heal_with_state(tmp_path: Path) -> None:
    api = Api()
    state = str(tmp_path / "s.db")
    source = csv(tmp_path / "inv.csv", [(f"k{i}", "v") for i in range(30)])
    api.failing = {f"k{i}" for i in range(21)}
    first = await run(api, source, state=state)
    assert first.exit_code == 1
    api.failing.clear()
    api.sent()
    second = await run(api, source, state=state)
    assert sorted(api.sent()) == sorted(f"k{i}" for i in range(21)) and second.exit_code == 0
    third = await run(api, source, state=state)
    assert api.sent() == [] and third.exit_code == 0


async def test_another_tenant_or_token_is_another_target(tmp_path: Path) -> None:
    api = Api()
    state = str(tmp_path / "s.db")
    source = csv(tmp_path / "inv.csv", [("k1", "a"), ("k2", "b")])
    await run(api, source, state=state, headers={"X-Tenant": "t1"})
    api.sent()
    other = await run(api, source, state=state, headers={"X-Tenant": "t2"})
    assert sorted(api.sent()) == ["k1", "k2"] and other.tally.by_status[Status.UNCHANGED] == 0
    await run(api, source, state=state, token="token-one-" + "x" * 20)
    assert sorted(api.sent()) == ["k1", "k2"]
    db = sqlite3.connect(state)
    targets = [t for (t,) in db.execute("SELECT target FROM targets")]
    db.close()
    assert len(targets) == 3 and not any("t1" in t or "token-one" in t for t in targets)


async def test_a_rollback_then_only_changed_sends_what_differs_live(tmp_path: Path) -> None:
    """The live value decides under --only-changed: tested with the mock in test_plan; here the
    memory's side: a rollback through bulkpatch voids the proof of the edit it undid."""
    api = Api()
    edit = csv(tmp_path / "site.csv", [(f"k{i}", "new") for i in range(5)])
    await run(api, csv(tmp_path / "before.csv", [(f"k{i}", "old") for i in range(5)]))
    await run(api, edit)
    await run(api, csv(tmp_path / "rollback.csv", [(f"k{i}", "old") for i in range(5)]))
    api.sent()
    again = await run(api, edit)
    assert sorted(api.sent()) == [f"k{i}" for i in range(5)] and again.exit_code == 0


async def test_changed_counts_keys_not_row_numbers_and_gone_lists_dropped_keys(tmp_path: Path) -> None:
    api = Api()
    source = tmp_path / "inv.csv"
    rows = [(f"k{i}", "v") for i in range(100)]
    await run(api, csv(source, rows))
    # One row deleted at the top shifts every row number; one value changed.
    tonight = rows[1:]
    tonight[50] = (tonight[50][0], "changed")
    result = await run(api, csv(source, tonight))
    assert result.changed == 1 and result.gone == 1 and result.tally.by_status[Status.UNCHANGED] == 98
    assert [g["key"] for g in gone(str(tmp_path / "bulkpatch-memory.db"))] == ["k0"]


def test_the_memory_holds_no_secret_in_clear(tmp_path: Path) -> None:
    target = Target("PATCH", BASE, "/w/{id}", {"X-Api-Key": "hunter2-secret"}, "tok-" + "s" * 30, True)
    Memory(str(tmp_path / "m.db"), target, input_name="x").close("finished")
    data = (tmp_path / "m.db").read_bytes()
    assert b"hunter2" not in data and b"tok-sss" not in data


async def test_a_partial_hotfix_does_not_make_the_nightlys_keys_gone(tmp_path: Path) -> None:
    api = Api()
    state = str(tmp_path / "s.db")
    nightly = csv(tmp_path / "inv.csv", [(f"k{i}", "v") for i in range(100)])
    await run(api, nightly, state=state)
    hotfix = await run(api, csv(tmp_path / "hotfix.csv", [("k5", "fixed")]), state=state)
    assert hotfix.gone == 0 and gone(state) == []  # was: 99 live keys listed "deleted at the source"
    tonight = await run(api, csv(nightly, [(f"k{i}", "v") for i in range(1, 100)]), state=state)
    assert tonight.gone == 1
    assert [(g["key"], g["input"]) for g in gone(state)] == [("k0", str(nightly))]


@pytest.mark.slow
def test_a_live_value_that_contradicts_the_memory_voids_its_proof(tmp_path: Path) -> None:
    """--only-changed saw the workload holding another value than the memory's last request."""
    from click.testing import CliRunner

    from bulkpatch.cli.main import cli
    from bulkpatch.mock import MockConfig
    from bulkpatch.mock.store import sample_workloads

    wid = next(iter(sample_workloads(1)))["id"]
    state = str(tmp_path / "s.db")

    def night(name: str, *extra: str) -> None:
        source = csv(tmp_path / "in.csv", [(wid, name)])
        args = ["run", str(source), "--base-url", mock.url, "--state", state, "--no-progress", *extra]
        assert CliRunner().invoke(cli, args).exit_code == 0

    with ThreadedMock(MockConfig(require_auth=False, workloads=1)) as mock:
        night("oc1")
        mock.api.store.update(wid, {"name": "oob"})  # changed behind bulkpatch's back
        night("oob", "--only-changed")  # equal live: recorded unchanged, and the old proof void
        night("oc1")
        assert mock.api.store.get(wid)["name"] == "oc1"  # type: ignore[index]


async def test_a_nightly_export_under_a_new_name_is_compared_with_last_nights(tmp_path: Path) -> None:
    api = Api()
    state = str(tmp_path / "s.db")
    await run(api, csv(tmp_path / "export-night1.csv", [(f"k{i}", "v") for i in range(100)]), state=state)
    night2 = await run(
        api, csv(tmp_path / "export-night2.csv", [(f"k{i}", "v") for i in range(3, 100)]), state=state
    )
    assert night2.gone == 3
    assert sorted(g["key"] for g in gone(state)) == ["k0", "k1", "k2"]
