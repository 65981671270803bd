"""The library API: bulkpatch.run / run_async over files or rows given in code, MockTransport."""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from helpers import API, NamesApi, ledger_rows, write

import bulkpatch
import bulkpatch.options
from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError, InputError
from bulkpatch.mock import MockServer
from bulkpatch.mock.store import sample_workloads
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult, Status, iter_records
from bulkpatch.testing import MockTransport, Response, SentRequest

BASE = "https://api.test"


def ok(request: SentRequest) -> Response:
    return Response(204)


def test_the_public_api_is_small_and_sorted() -> None:
    assert bulkpatch.__all__ == sorted(bulkpatch.__all__)
    for name in bulkpatch.__all__:
        assert getattr(bulkpatch, name) is not None
    assert "Mapper" not in bulkpatch.__all__ and "Pacer" not in bulkpatch.__all__
    with pytest.raises(AttributeError):
        _ = bulkpatch.Mapper  # type: ignore[attr-defined]


async def test_rows_from_a_list_with_a_transform_and_a_result_callback(tmp_path: Path) -> None:
    transport = MockTransport(ok)
    seen: list[RowResult] = []
    rows = [{"id": f"w{i}", "label": f"db-{i}"} for i in range(20)] + ["not a mapping"]
    summary = await bulkpatch.run_async(
        rows,
        transform=lambda row: {"workload_id": row["id"], "name": row["label"].upper()},
        on_result=seen.append,
        base_url=BASE,
        ledger=str(tmp_path / "l.jsonl"),
        transport=transport,
    )
    assert [orjson.loads(r.body or b"") for r in transport.requests][:2] == [
        {"name": "DB-0"},
        {"name": "DB-1"},
    ]
    assert transport.requests[0].url == f"{BASE}/api/workload_management/v5/workloads/w0"
    last = next(r for r in seen if r.row == 21)
    assert len(seen) == 21 and last.status is Status.INVALID and "mapping" in (last.error or "")
    assert summary.tally.by_status[Status.OK] == 20 and summary.exit_code == 1


async def test_rows_from_an_async_iterable(tmp_path: Path) -> None:
    async def rows() -> AsyncIterator[dict[str, str]]:
        for i in range(300):
            yield {"workload_id": f"w{i}", "name": "x"}

    transport = MockTransport(ok)
    summary = await bulkpatch.run_async(
        rows(), base_url=BASE, ledger=str(tmp_path / "l.jsonl"), transport=transport, concurrency=8
    )
    assert len(transport.requests) == 300 and summary.exit_code == 0
    assert [r["row"] for r in iter_records(tmp_path / "l.jsonl") if r["type"] == "row"][:3] == [1, 2, 3]


async def test_a_transform_that_raises_makes_its_row_invalid(tmp_path: Path) -> None:
    def transform(row: dict[str, object]) -> dict[str, object]:
        if row["workload_id"] == "bad":
            raise KeyError("owner")
        return row

    rows = [{"workload_id": "bad", "name": "a"}, {"workload_id": "good", "name": "b"}]
    transport = MockTransport(ok)
    await bulkpatch.run_async(
        rows, transform=transform, base_url=BASE, ledger=str(tmp_path / "l.jsonl"), transport=transport
    )
    records = {r["key"]: r for r in iter_records(tmp_path / "l.jsonl") if r["type"] == "row"}
    assert records["good"]["status"] == "ok" and len(transport.requests) == 1
    assert records[""]["status"] == "invalid" and "transform failed: KeyError" in str(records[""]["error"])


async def test_rows_in_code_need_a_ledger() -> None:
    with pytest.raises(ConfigError, match="ledger=PATH"):
        await bulkpatch.run_async([{"workload_id": "w1", "name": "a"}], base_url=BASE)


async def test_a_file_path_runs_like_the_cli(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\n")
    transport = MockTransport(ok)
    summary = await bulkpatch.run_async(source, base_url=BASE, transport=transport)
    assert len(transport.requests) == 2 and summary.ledger_path == f"{source}.ledger.jsonl"


def test_run_without_an_event_loop(tmp_path: Path) -> None:
    transport = MockTransport(ok)
    summary = bulkpatch.run(
        [{"workload_id": "w1", "name": "a"}], base_url=BASE, ledger=os.devnull, transport=transport
    )
    assert summary.exit_code == 0 and len(transport.requests) == 1


async def test_a_dry_run_given_to_run_sends_nothing(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    transport = MockTransport(ok)
    with pytest.raises(bulkpatch.BulkPatchError, match="dry run sends nothing"):
        await Run(RunOptions(input=str(source), base_url=BASE, dry_run=True), transport=transport).execute()
    assert transport.requests == []
    found = bulkpatch.dry_run(RunOptions(input=str(source), dry_run=True))
    assert found.tally.total == 1 and found.samples[0][1] == "/api/workload_management/v5/workloads/w1"


async def test_the_readme_library_example_runs_against_the_mock(
    tmp_path: Path, mock_server: MockServer
) -> None:
    """The README's library example, as written, against the bundled mock on 127.0.0.1."""
    ids = [w["id"] for w in sample_workloads(3)]
    rows = [{"workload_id": wid, "name": f"renamed-{i}"} for i, wid in enumerate(ids)]
    results: list[RowResult] = []
    summary = await bulkpatch.run_async(
        rows,
        base_url=mock_server.url,
        ledger=str(tmp_path / "rename.ledger.jsonl"),
        on_result=results.append,
    )
    assert summary.exit_code == 0 and [r.status for r in results] == [Status.OK] * 3
    assert [mock_server.api.store.get(wid)["name"] for wid in ids] == ["renamed-0", "renamed-1", "renamed-2"]  # type: ignore[index]


@pytest.mark.slow
async def test_shards_split_the_rows_between_them_exactly_once(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},x\n" for i in range(1000)))
    sent: list[str] = []
    for k in range(4):
        transport = MockTransport(ok)
        opts = RunOptions(input=str(source), base_url=BASE, shard=(k, 4), rate=4000.0)
        result = await Run(opts, transport=transport).execute()
        sent += [r.url.rsplit("/", 1)[1] for r in transport.requests]
        assert result.ledger_path == f"{source}.shard-{k}-of-4.ledger.jsonl"
        assert result.rate == 1000.0 and result.other_shards == 1000 - len(transport.requests)
        assert 150 < len(transport.requests) < 350  # a fair split
    assert sorted(sent) == sorted(f"w{i}" for i in range(1000))


def test_shard_of_is_stable() -> None:
    from bulkpatch.engine.intake import shard_of

    # Fixed values: the same on every machine and Python version (no randomised hash()).
    assert [shard_of(f"w{i}", 4) for i in range(8)] == [shard_of(f"w{i}", 4) for i in range(8)]
    assert (
        shard_of("3f9c2a8e-0000-4000-8000-000000000001", 16)
        == int.from_bytes(
            __import__("hashlib").blake2b(b"3f9c2a8e-0000-4000-8000-000000000001", digest_size=8).digest(),
            "big",
        )
        % 16
    )


def test_a_shard_index_comes_from_the_indexed_job(monkeypatch: pytest.MonkeyPatch) -> None:
    from bulkpatch.option_values import parse_shard

    assert parse_shard("2/4") == (2, 4)
    assert parse_shard("4", {"JOB_COMPLETION_INDEX": "3"}) == (3, 4)
    with pytest.raises(ConfigError, match="JOB_COMPLETION_INDEX"):
        parse_shard("4", {})
    with pytest.raises(ConfigError, match="0 <= K < N"):
        RunOptions(input="x.csv", base_url=BASE, shard=(4, 4))


def test_run_inside_a_running_loop_says_to_await_run_async() -> None:
    """Issue 18: asyncio's bare RuntimeError and a "coroutine was never awaited" warning."""

    async def inside() -> None:
        with pytest.raises(bulkpatch.LoopRunning, match=r"await bulkpatch\.run_async\(\)"):
            bulkpatch.run([{"workload_id": "w1", "name": "a"}], base_url=BASE, ledger=os.devnull)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(inside())
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert issubclass(bulkpatch.LoopRunning, RuntimeError)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Tenant": "t1"},
        ["X-Tenant: t1"],
        [("X-Tenant", "t1")],
        (h for h in ["X-Tenant:t1"]),
    ],
)
def test_headers_take_a_mapping_lines_or_pairs(headers: bulkpatch.option_values.Headers) -> None:
    """Issue 18: headers=[...] raised AttributeError."""
    transport = MockTransport(ok)
    bulkpatch.run(
        [{"workload_id": "w1", "name": "a"}],
        base_url=BASE,
        ledger=os.devnull,
        headers=headers,
        transport=transport,
    )
    assert transport.requests[0].headers["X-Tenant"] == "t1"


@pytest.mark.parametrize("headers", ["X-Tenant: t1", [("X-Tenant", 1)], [("a", "b", "c")], [b"X: y"], 7])
def test_other_headers_are_refused_with_a_config_error(headers: object) -> None:
    with pytest.raises(ConfigError, match="headers= takes a mapping"):
        bulkpatch.run([{"workload_id": "w1", "name": "a"}], base_url=BASE, ledger=os.devnull, headers=headers)  # type: ignore[arg-type]


async def test_cancelling_run_async_leaves_no_task_or_unretrieved_error_behind() -> None:
    """Issue 18: cancelling printed '_GatheringFuture exception was never retrieved'."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    started, never = asyncio.Event(), asyncio.Event()

    async def hang(request: SentRequest) -> Response:
        started.set()
        await never.wait()
        return Response(204)

    rows = [{"workload_id": f"w{i}", "name": "a"} for i in range(5)]
    task = asyncio.create_task(
        bulkpatch.run_async(
            rows, base_url=BASE, ledger=os.devnull, transport=MockTransport(hang), concurrency=2
        )
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == {asyncio.current_task()}
    del task
    gc.collect()
    assert reported == []


def test_run_takes_the_options_as_named_keywords_with_runoptions_defaults() -> None:
    import dataclasses
    import inspect

    defaults = {
        f.name: f.default for f in dataclasses.fields(RunOptions) if f.default is not dataclasses.MISSING
    }
    params = inspect.signature(bulkpatch.run).parameters
    assert inspect.signature(bulkpatch.run) == inspect.signature(bulkpatch.run_async)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name, param in params.items():
        if name in defaults and name != "headers":
            assert param.default == defaults[name], name
    missing = set(defaults) - set(params) - {"dry_run", "input"}
    assert not missing, f"RunOptions fields run() does not take: {missing}"


def test_run_takes_a_runoptions_but_not_together_with_keywords(tmp_path: Path) -> None:
    options = RunOptions(input="ignored", base_url=BASE, ledger=os.devnull, concurrency=2)
    transport = MockTransport(ok)
    summary = bulkpatch.run([{"workload_id": "w1", "name": "a"}], options=options, transport=transport)
    assert summary.exit_code == 0 and len(transport.requests) == 1
    with pytest.raises(ConfigError, match=r"not both \(concurrency\)"):
        bulkpatch.run([{"workload_id": "w1", "name": "a"}], options=options, concurrency=4)


async def test_rows_from_an_iterable_that_breaks_off_are_still_sent(tmp_path: Path) -> None:
    def rows() -> Iterator[dict[str, str]]:
        for i in range(10):
            yield {"workload_id": f"w{i}", "name": "x"}
        raise RuntimeError("the database cursor died")

    api = NamesApi()
    ledger = tmp_path / "rows.ledger.jsonl"
    with pytest.raises(InputError):
        await bulkpatch.run_async(rows(), base_url=API, ledger=str(ledger), transport=MockTransport(api))
    assert len(api.names) == 10 and len(ledger_rows(ledger)) == 10


async def test_the_runs_headers_reach_a_transport_of_the_callers(tmp_path: Path) -> None:
    transport = MockTransport(lambda request: Response(204))
    await bulkpatch.run_async(
        [{"workload_id": "w1", "name": "a"}],
        base_url=API,
        ledger=os.devnull,
        transport=transport,
        headers={"X-Tenant": "t1"},
        token="tok-123",
    )
    sent: SentRequest = transport.requests[0]
    assert sent.headers["X-Tenant"] == "t1" and sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Authorization"] == "Bearer tok-123"
