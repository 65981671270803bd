"""An in-memory API and a driver of real runs against it: the model ``test_truth_model`` checks
the one rule of ``engine/truth.py`` against.

The API keeps one store of workloads per tenant (the ``X-Tenant`` header): a PATCH merges its
JSON body into the stored workload. Keys in ``failing`` are answered 503 (transient) or 422
(final) and left alone. ``cut_after`` makes every request past the Nth hang: its answer never
comes, and with ``lost`` the API applied it first (the answer was lost on the way back). Every
application is counted, so a test can tell how many rows reached the API twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from helpers import FakeClock

from bulkpatch.engine.run import Run
from bulkpatch.http.transport import Response
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.memory import DEFAULT_NAME
from bulkpatch.records.results import RunResult

BASE = "http://api.test"
Rows = list[tuple[str, str]]


@dataclass
class ModelApi:
    """The API: stores per tenant, failing keys, and an optional cut (see the module docstring)."""

    stores: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: key → the status it is answered with (503 or 422) instead of being applied
    failing: dict[str, int] = field(default_factory=dict)
    #: (tenant, key, body) of each request applied, in arrival order
    applied: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    requests: int = 0
    cut_after: int | None = None
    lost: bool = False
    #: set once a request hangs
    cut: asyncio.Event | None = None

    def store(self, tenant: str = "t1") -> dict[str, dict[str, Any]]:
        return self.stores.setdefault(tenant, {})

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None = None
    ) -> Response:
        assert method == "PATCH"
        self.requests += 1
        await asyncio.sleep(0)  # let other workers in: concurrency is real
        tenant = (headers or {}).get("X-Tenant", "t1")
        key = url.rsplit("/", 1)[1]
        hang = self.cut_after is not None and self.requests > self.cut_after
        status = self.failing.get(key)
        if status is None and (not hang or self.lost):
            patch = orjson.loads(body or b"{}")
            self.store(tenant).setdefault(key, {}).update(patch)
            self.applied.append((tenant, key, patch))
        if hang:
            assert self.cut is not None
            self.cut.set()
            await asyncio.Event().wait()  # the answer never comes
        if status is not None:
            return Response(status, None, b'{"error":{"code":"Nope","message":"refused"}}')
        return Response(204, None, b"")

    async def close(self) -> None:
        return None


def csv_text(rows: Rows) -> str:
    return "workload_id,name\n" + "".join(f"{k},{v}\n" for k, v in rows)


def latest(rows: Rows) -> dict[str, str]:
    """Each key's value after the rows are applied in order: its last row's."""
    return dict(rows)


def names(api: ModelApi, tenant: str = "t1") -> dict[str, object]:
    return {k: w.get("name") for k, w in api.store(tenant).items()}


def in_input_order(applied: list[tuple[str, str]], rows: Rows) -> bool:
    """Each key's values applied by a run are a subsequence of its rows' values, in order."""
    for key in {k for k, _ in applied}:
        left = iter(v for k, v in rows if k == key)
        if not all(any(v == w for w in left) for k, v in applied if k == key):
            return False
    return True


def assert_clean(outcome: Outcome, api: ModelApi, rows: Rows, tenant: str = "t1") -> None:
    assert outcome.result is not None and outcome.result.exit_code == 0
    assert not outcome.unproved, outcome.unproved
    held = names(api, tenant)
    assert {k: held.get(k) for k in latest(rows)} == latest(rows)


@dataclass
class Outcome:
    result: RunResult | None
    #: (key, value) of the rows applied by this run
    applied: list[tuple[str, str]]
    #: rows recorded ``unchanged`` whose value the API did not hold at that moment
    unproved: list[str]
    stopped: bool
    #: rows recorded ``unchanged`` (each checked against the API)
    unchanged: int


async def run_rows(
    api: ModelApi,
    folder: Path,
    name: str,
    rows: Rows,
    *,
    state: bool = False,
    retry_all: bool = False,
    tenant: str = "t1",
    concurrency: int = 2,
    cut_after: int | None = None,
    lost: bool = False,
    full: bool = False,
    die: bool = False,
) -> Outcome:
    """One real run of ``rows`` written to ``folder/name``; with ``cut_after`` it is stopped
    (Ctrl-C) once a request hangs, or with ``die`` it dies there: its task is cancelled, so it
    never writes its end (the memory takes it for a run killed with kill -9). ``state`` names
    the memory beside the ledger, so that runs with and without ``--state`` share one memory
    and differ only in healing."""
    source = folder / name
    source.write_text(csv_text(rows), encoding="utf-8")
    values = {line: value for line, (_, value) in enumerate(rows, start=2)}
    unproved: list[str] = []
    unchanged = 0

    def check(result: RowResult) -> None:
        nonlocal unchanged
        if result.status is Status.UNCHANGED:
            unchanged += 1
            held = api.store(tenant).get(result.key, {}).get("name")
            if held != values[result.line]:
                unproved.append(f"{result.key}={values[result.line]} (API holds {held})")

    options = RunOptions(
        input=str(source),
        base_url=BASE,
        state=str(folder / DEFAULT_NAME) if state else None,
        retry_failed="all" if retry_all else "none",
        headers={"X-Tenant": tenant} if tenant != "t1" else {},
        concurrency=concurrency,
        max_attempts=2,
        grace=0,
        full=full,
    )
    clock = FakeClock()
    api.cut_after, api.lost, api.requests, api.cut = cut_after, lost, 0, asyncio.Event()
    before = len(api.applied)
    run = Run(options, transport=api, sleep=clock.sleep, clock=clock, on_result=check)
    task = asyncio.ensure_future(run.execute())
    cut = asyncio.ensure_future(api.cut.wait())
    await asyncio.wait([task, cut], return_when=asyncio.FIRST_COMPLETED)
    stopped = not task.done()
    cut.cancel()
    result: RunResult | None = None
    if stopped and die:
        asyncio.get_running_loop().set_exception_handler(_quiet_about_the_dead)
        task.cancel()
        # Its workers die with it: none of them may write anything after this.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for other in others:
            other.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    else:
        if stopped:
            run.stop()
        result = await task
    api.cut_after = None
    applied = [(k, str(body["name"])) for t, k, body in api.applied[before:] if t == tenant]
    return Outcome(result, applied, unproved, stopped, unchanged)


def _quiet_about_the_dead(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The dead run's gathering of its workers holds their cancellation, never retrieved."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)
