"""Issue 9's reproductions, replayed: rows lost or misapplied, secrets, crashes instead of one line.

Unit-level cases run the pipeline against a fake transport; the ones about processes (pipes,
closed descriptors, signals) run ``python -m bulkpatch`` against the mock on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import FakeClock, ThreadedMock, ok, write

from bulkpatch.engine.run import Run
from bulkpatch.errors import ApiUnreachable, ConfigError, CredentialsRejected, TransportError, WrongTarget
from bulkpatch.http.transport import Response
from bulkpatch.mock import MockConfig
from bulkpatch.mock.store import sample_workloads
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import iter_records
from bulkpatch.records.results import RunResult
from bulkpatch.testing import MockTransport, SentRequest

BASE = "http://api.test"
SECRET = "s3cr3t-T0KEN-value"


def options(source: Path, **kw: object) -> RunOptions:
    return RunOptions(**{"input": str(source), "base_url": BASE, **kw})  # type: ignore[arg-type]


async def run(opts: RunOptions, transport: MockTransport) -> RunResult:
    clock = FakeClock()
    return await Run(opts, transport=transport, sleep=clock.sleep, clock=clock).execute()


def rows_of(ledger: Path | str) -> list[dict[str, object]]:
    return [r for r in iter_records(ledger) if r["type"] == "row"]


# --- 9.2: one key's rows land in input order -------------------------------------------------


async def test_a_retried_row_never_lands_after_a_later_row_of_its_key(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,OLD\nw1,NEW\nw2,X\n")
    applied: dict[str, str] = {}
    seen_old = 0

    def handler(request: SentRequest) -> Response:
        nonlocal seen_old
        name = orjson.loads(request.body or b"{}")["name"]
        if name == "OLD" and seen_old == 0:
            seen_old += 1
            return Response(503, None, b"")  # the first request is retried...
        applied[request.url.rsplit("/", 1)[1]] = name
        return Response(204, None, b"")

    result = await run(options(source, concurrency=8), MockTransport(handler))
    assert applied == {"w1": "NEW", "w2": "X"}  # ...and still lands before NEW
    assert result.repeated_keys == 1 and result.exit_code == 0


async def test_duplicate_keys_end_with_the_last_value_under_random_latency(tmp_path: Path) -> None:
    pairs = 50
    source = write(
        tmp_path / "in.csv",
        "workload_id,name\n"
        + "".join(f"w{i},OLD\n" for i in range(pairs))
        + "".join(f"w{i},NEW\n" for i in range(pairs)),
    )
    applied: dict[str, str] = {}
    rng = random.Random(5)

    async def slow(request: SentRequest) -> Response:
        for _ in range(rng.randrange(0, 50)):  # 0-50 loop turns: answers overtake each other
            await asyncio.sleep(0)
        applied[request.url.rsplit("/", 1)[1]] = orjson.loads(request.body or b"{}")["name"]
        return Response(204, None, b"")

    result = await run(options(source, concurrency=32), MockTransport(slow))
    assert set(applied.values()) == {"NEW"} and len(applied) == pairs
    assert result.repeated_keys == pairs


# --- 9.5: ids are strings or exact integers --------------------------------------------------


async def test_only_strings_and_exact_integers_name_a_workload(tmp_path: Path) -> None:
    lines = [
        '{"workload_id": 123456789012345678901234567890, "name": "a"}',
        '{"workload_id": true, "name": "a"}',
        '{"workload_id": 1e2, "name": "a"}',
        '{"workload_id": "\\t", "name": "a"}',
        '{"workload_id": " ", "name": "a"}',
        '{"workload_id": ["x"], "name": "a"}',
        '{"workload_id": 42, "name": "a"}',
        '{"workload_id": "w-1", "name": "a"}',
    ]
    source = write(tmp_path / "in.jsonl", "\n".join(lines) + "\n")
    transport = MockTransport(ok)
    result = await run(options(source), transport)
    assert [c.url.rsplit("/", 1)[1] for c in transport.requests] == ["42", "w-1"]
    reasons = [r["error"] for r in rows_of(f"{source}.ledger.jsonl") if r["status"] == "invalid"]
    assert len(reasons) == 6 and result.exit_code == 1
    assert "not a string or an exact integer" in str(reasons[0])
    assert "a boolean" in str(reasons[1]) and "blank" in str(reasons[3])


# --- 9.6: a token echoed back by the server is masked everywhere ------------------------------


async def test_an_echoed_secret_reaches_no_file(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\nw3,c\n")

    def handler(request: SentRequest) -> Response:
        if request.url.endswith("w1"):
            return Response(204, None, b"")
        if request.url.endswith("w2"):
            envelope = {"error": {"code": "forbidden", "message": f"token Bearer {SECRET} has no access"}}
            return Response(400, None, orjson.dumps(envelope))
        return Response(500, None, f"bad key {SECRET}-X".encode())

    events: list[tuple[str, dict[str, object]]] = []
    opts = options(source, token=SECRET, max_attempts=2, headers={"X-Api-Key": "api-key-0451"})
    r = Run(
        opts,
        transport=MockTransport(handler),
        sleep=FakeClock().sleep,
        events=lambda e, f: events.append((e, f)),
    )
    result = await r.execute()
    ledger = Path(f"{source}.ledger.jsonl").read_text()
    assert SECRET not in ledger and "***" in ledger
    assert SECRET not in repr(events) and events
    assert all(SECRET not in error for error in result.tally.errors)
    assert Path(f"{source}.ledger.jsonl").stat().st_mode & 0o777 == 0o600


# --- weaker: API messages kept, POST not resent blindly, one Authorization ---------------------


async def test_common_error_shapes_keep_the_apis_message(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\n")
    bodies = {
        "w1": {"detail": [{"loc": ["body", "name"], "msg": "too long"}]},
        "w2": {"title": "Unprocessable", "errors": [{"field": "name", "message": "taken"}]},
    }

    def handler(request: SentRequest) -> Response:
        return Response(422, None, orjson.dumps(bodies[request.url.rsplit("/", 1)[1]]))

    await run(options(source), MockTransport(handler))
    errors = {r["key"]: r["error"] for r in rows_of(f"{source}.ledger.jsonl")}
    assert errors == {"w1": "HTTP 422: body.name: too long", "w2": "HTTP 422: Unprocessable; name: taken"}


@pytest.mark.parametrize(("unsafe", "requests"), [(False, 1), (True, 3)])
async def test_a_post_is_resent_after_a_dropped_answer_only_when_asked(
    tmp_path: Path, unsafe: bool, requests: int
) -> None:
    source = write(tmp_path / "in.jsonl", '{"name": "a"}\n')

    def handler(request: SentRequest) -> Response:
        raise TransportError("disconnect", "server closed the connection")

    transport = MockTransport(handler)
    opts = options(source, method="POST", path="/things", schema="any", max_attempts=3, retry_unsafe=unsafe)
    await run(opts, transport)
    assert len(transport.requests) == requests
    (record,) = rows_of(f"{source}.ledger.jsonl")
    assert record["status"] == "failed"
    assert ("--retry-unsafe" in str(record["error"])) is not unsafe


def test_authorization_from_two_places_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="-H Authorization and BULKPATCH_TOKEN"):
        options(tmp_path / "in.csv", token="t0k", headers={"authorization": "Bearer other"})


# --- fail fast: every row left would fail -----------------------------------------------------


async def test_a_rejected_static_token_stops_the_run_and_records_nothing(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(500)))
    transport = MockTransport(lambda _: Response(401, None, b'{"error":{"message":"expired"}}'))
    with pytest.raises(CredentialsRejected, match="credentials rejected") as caught:
        await run(options(source, token=SECRET, concurrency=16), transport)
    assert len(transport.requests) <= 16
    assert rows_of(f"{source}.ledger.jsonl") == []
    assert isinstance(caught.value.result, RunResult) and caught.value.result.requests == len(
        transport.requests
    )


async def test_a_403_after_successes_fails_only_its_row(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\nw3,c\n")

    def handler(request: SentRequest) -> Response:
        return Response(403 if request.url.endswith("w2") else 204, None, b"")

    result = await run(options(source, concurrency=1), MockTransport(handler))
    assert [r["status"] for r in rows_of(f"{source}.ledger.jsonl")] == ["ok", "failed", "ok"]
    assert result.exit_code == 1


async def test_the_first_rows_all_failing_alike_stop_the_run(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(300)))
    transport = MockTransport(lambda _: Response(404, None, b""))
    with pytest.raises(WrongTarget, match="first 50 rows sent all failed with HTTP 404"):
        await run(options(source, concurrency=4), transport)
    assert 50 <= len(rows_of(f"{source}.ledger.jsonl")) <= 54
    assert len(transport.requests) <= 54


async def test_some_404s_among_successes_do_not_stop_the_run(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(120)))

    def handler(request: SentRequest) -> Response:
        return Response(204 if request.url.endswith("w7") else 404, None, b"")

    result = await run(options(source, concurrency=1), MockTransport(handler))
    assert result.tally.total == 120


async def test_an_api_down_for_a_while_fails_no_row(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(200)))
    clock = FakeClock()
    down = {"until": 0.0}
    calls = 0

    def handler(request: SentRequest) -> Response:
        nonlocal calls
        calls += 1
        if calls == 60:
            down["until"] = clock.now + 20.0  # the API goes away for 20 s (fake) mid-run
        if clock.now < down["until"]:
            raise TransportError("connect", "cannot connect: Connection refused")
        return Response(204, None, b"")

    events: list[str] = []
    r = Run(
        options(source, concurrency=8, max_attempts=3),
        transport=MockTransport(handler),
        sleep=clock.sleep,
        clock=clock,
        events=lambda e, f: events.append(e),
    )
    result = await r.execute()
    assert result.tally.by_status["ok"] == 200 and result.exit_code == 0
    assert "outage_started" in events and "outage_ended" in events


async def test_an_api_that_stays_down_stops_the_run_with_rows_unrecorded(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(100)))

    def handler(request: SentRequest) -> Response:
        raise TransportError("connect", "cannot connect: Connection refused")

    with pytest.raises(ApiUnreachable, match="API unreachable since"):
        await run(options(source, concurrency=8, max_outage=60), MockTransport(handler))
    failed = [r for r in rows_of(f"{source}.ledger.jsonl") if r["status"] == "failed"]
    assert failed == []


# --- processes: pipes, closed descriptors, signals, bad configuration -------------------------


@pytest.fixture
def api() -> Iterator[ThreadedMock]:
    with ThreadedMock(MockConfig(require_auth=False, workloads=300)) as server:
        yield server


def fleet_csv(tmp_path: Path, n: int) -> Path:
    rows = "".join(f"{w['id']},piped-{i}\n" for i, w in enumerate(sample_workloads(n)))
    return write(tmp_path / "fleet.csv", "workload_id,name\n" + rows)


#: the environment of a spawned run: none of the machine's BULKPATCH_ variables
ENV = {k: v for k, v in os.environ.items() if not k.startswith("BULKPATCH_")}


def bulkpatch(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bulkpatch", *args],
        **{"env": ENV, "capture_output": True, "timeout": 120, **kw},  # type: ignore[arg-type]
    )


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """``bulkpatch ARGS`` running in the background, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "bulkpatch", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.slow
def test_rows_from_a_pipe_are_all_read(tmp_path: Path, api: ThreadedMock) -> None:
    """Issue 9.1: `cat x.csv | bulkpatch run /dev/stdin` sent 262 of 3,000 rows, exit 0."""
    source = fleet_csv(tmp_path, 300)
    ledger = tmp_path / "x.jsonl"
    with open(source, "rb") as stdin:
        cat = subprocess.Popen(["cat"], stdin=stdin, stdout=subprocess.PIPE)
        done = bulkpatch(
            "run",
            "/dev/stdin",
            "--format",
            "csv",
            "--ledger",
            str(ledger),
            "--base-url",
            api.url,
            stdin=cat.stdout,
        )
        cat.wait()
        assert cat.stdout is not None
        cat.stdout.close()
    assert done.returncode == 0, done.stderr
    assert len(rows_of(ledger)) == 300
    assert api.api.store.get(list(sample_workloads(300))[-1]["id"])["name"] == "piped-299"  # type: ignore[index]


@pytest.mark.slow
def test_rows_from_a_named_fifo_are_all_read(tmp_path: Path, api: ThreadedMock) -> None:
    source = fleet_csv(tmp_path, 120)
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    ledger = tmp_path / "x.jsonl"
    reader = spawn("run", str(fifo), "--format", "csv", "--ledger", str(ledger), "--base-url", api.url)
    with open(fifo, "wb") as f:  # blocks until the run opens the FIFO: once, not twice
        f.write(source.read_bytes())
    _, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert len(rows_of(ledger)) == 120


@pytest.mark.parametrize("closed", [0, 1])
@pytest.mark.slow
def test_a_closed_stdin_or_stdout_ends_with_a_proper_status(
    tmp_path: Path, api: ThreadedMock, closed: int
) -> None:
    """Issue 9.8: `>&-` / `<&-` ended in `uv__close: Assertion` and exit 134."""
    source = fleet_csv(tmp_path, 50)
    script = (
        f"import os, runpy, sys; os.close({closed}); sys.argv = ['bulkpatch', *sys.argv[1:]];"
        " runpy.run_module('bulkpatch', run_name='__main__')"
    )
    done = bulkpatch_raw(["-c", script, "run", str(source), "--base-url", api.url])
    assert done.returncode == 0, done.stderr
    assert len(rows_of(f"{source}.ledger.jsonl")) == 50


def bulkpatch_raw(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, *args], env=ENV, capture_output=True, timeout=120)


@pytest.mark.slow
def test_a_reader_that_goes_away_does_not_change_the_exit_status(tmp_path: Path, api: ThreadedMock) -> None:
    source = fleet_csv(tmp_path, 50)
    proc = spawn("run", str(source), "--base-url", api.url)
    assert proc.stdout is not None
    proc.stdout.close()  # `| head -0`: nobody reads the summary
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-url", "http://127.0.0.1:99999"], "not a valid URL"),
        (["--base-url", "http://127.0.0.1:abc"], "not a valid URL"),
        (["--base-url", "http://[::1"], "not a valid URL"),
        (["--base-url", "http://h/?q=1"], "?query or #fragment"),
        (["--base-url", "http://h/#top"], "?query or #fragment"),
        (["--base-url", "ftp://u:PW@h"], "must not carry credentials"),
        (["--base-url", "u:PW@host"], "must not carry credentials"),
        (["--base-url", "http://h", "--timeout", "nan"], "--timeout must be"),
        (["--base-url", "http://h", "--rate", "nan"], "--rate must be"),
        (["--base-url", "http://h", "--rate", "inf"], "--rate must be"),
    ],
)
@pytest.mark.slow
def test_bad_configuration_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    source = fleet_csv(tmp_path, 3)
    done = bulkpatch("run", str(source), *args)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert "PW" not in err
    assert not Path(f"{source}.ledger.jsonl").exists()


@pytest.mark.parametrize("token", ["abc\ndef", "   ", "tab\there"])
@pytest.mark.slow
def test_a_malformed_token_is_refused_up_front(tmp_path: Path, token: str) -> None:
    source = fleet_csv(tmp_path, 3)
    done = bulkpatch(
        "run", str(source), "--base-url", "http://127.0.0.1:9", env={**ENV, "BULKPATCH_TOKEN": token}
    )
    assert done.returncode == 2 and b"BULKPATCH_TOKEN must be one line" in done.stderr
    assert token.encode() not in done.stderr or not token.strip()


@pytest.mark.slow
def test_sighup_ends_the_run_like_sigterm(tmp_path: Path) -> None:
    """Issue 9.11: SIGHUP killed the run with no summary and no end record."""
    source = fleet_csv(tmp_path, 300)
    with ThreadedMock(MockConfig(require_auth=False, workloads=300, latency_ms=50)) as slow:
        proc = spawn("run", str(source), "--base-url", slow.url, "--concurrency", "2")
        ledger = Path(f"{source}.ledger.jsonl")
        deadline = time.monotonic() + 60
        while not (ledger.exists() and rows_of(ledger)):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"bulkpatch run interrupted" in out
    assert [r["event"] for r in iter_records(ledger) if r["type"] == "run"][-1] == "interrupted"
