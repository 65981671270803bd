from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from helpers import (
    API,
    ECHOED_SECRET,
    FakeClock,
    ledger_rows,
    run_on_fake_clock,
    run_options,
    write,
)

from bulkpatch.engine.retry import RetryPolicy
from bulkpatch.engine.run import Run
from bulkpatch.engine.sender import Sender, describe_error
from bulkpatch.errors import CredentialsRejected, TransportError, WrongTarget
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import Status
from bulkpatch.records.results import RunResult
from bulkpatch.rows.mapping import Request
from bulkpatch.testing import MockTransport, Response, SentRequest

REQUEST = Request(row=3, line=4, key="w1", path="/workloads/w1", body=b'{"name":"x"}')


script = MockTransport.script


def sender(transport: MockTransport, clock: FakeClock, **policy: float) -> Sender:
    return Sender(
        transport,
        "http://api.test/",
        policy=RetryPolicy(**policy),  # type: ignore[arg-type]
        sleep=clock.sleep,
        clock=clock,
    )


def envelope(status: int, code: str, message: str) -> Response:
    return Response(status, None, orjson.dumps({"error": {"code": code, "message": message}}))


async def test_success_first_time() -> None:
    clock = FakeClock()
    transport = script(Response(204, None, b""))
    result = await sender(transport, clock).send(REQUEST)
    assert (result.status, result.http_status, result.attempts, result.error) == (Status.OK, 204, 1, None)
    assert (result.row, result.line, result.key) == (3, 4, "w1")
    assert transport.requests[0].url == "http://api.test/workloads/w1"
    assert transport.requests[0].method == "PATCH"
    assert transport.requests[0].body == b'{"name":"x"}'
    assert clock.sleeps == []


async def test_transient_failures_are_retried_with_jittered_backoff() -> None:
    clock = FakeClock()
    transport = script(
        Response(503, None, b""), TransportError("timeout", "timed out"), Response(200, None, b"{}")
    )
    result = await sender(transport, clock, backoff_base=1.0).send(REQUEST)
    assert (result.status, result.http_status, result.attempts) == (Status.OK, 200, 3)
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 1.0 and 0 <= clock.sleeps[1] <= 2.0


async def test_permanent_error_is_final_after_one_request_with_the_api_message() -> None:
    clock = FakeClock()
    transport = script(envelope(404, "NotFound", "workload w1 not found"))
    result = await sender(transport, clock).send(REQUEST)
    assert result.status is Status.FAILED
    assert (result.http_status, result.attempts) == (404, 1)
    assert result.error == "HTTP 404: NotFound: workload w1 not found"
    assert len(transport.requests) == 1


async def test_gives_up_after_max_attempts() -> None:
    clock = FakeClock()
    transport = MockTransport(lambda _: Response(502, None, b"bad gateway"))
    result = await sender(transport, clock, max_attempts=4).send(REQUEST)
    assert result.status is Status.FAILED
    assert (result.http_status, result.attempts) == (502, 4)
    assert result.error == "HTTP 502: bad gateway (gave up after 4 attempts)"
    assert len(transport.requests) == 4


async def test_one_attempt_given_up_reads_in_the_singular() -> None:
    transport = MockTransport(lambda _: Response(503, None, b"busy"))
    result = await sender(transport, FakeClock(), max_attempts=1).send(REQUEST)
    assert result.error == "HTTP 503: busy (gave up after 1 attempt)"


async def test_retry_after_is_honoured_before_the_next_attempt() -> None:
    clock = FakeClock()
    transport = script(Response(429, "7", b""), Response(204, None, b""))
    result = await sender(transport, clock).send(REQUEST)
    assert result.status is Status.OK
    # The pacer pauses everyone for 7 s and the row's own wait is 7 s: nothing goes out sooner.
    assert clock.sleeps and sum(clock.sleeps) >= 7.0
    assert result.ms is not None and result.ms >= 7000


async def test_max_attempts_one_means_no_retry() -> None:
    clock = FakeClock()
    transport = script(Response(503, None, b""))
    result = await sender(transport, clock, max_attempts=1).send(REQUEST)
    assert (result.status, result.attempts) == (Status.FAILED, 1)


class RenewingAuth:
    renewable = True

    def __init__(self) -> None:
        self.version = 1
        self.renewals = 0

    async def header(self) -> str | None:
        return f"Bearer t{self.version}"

    async def renew(self, stale: str | None) -> None:
        self.renewals += 1
        self.version += 1


async def test_401_renews_the_token_without_spending_an_attempt() -> None:
    clock = FakeClock()

    def handler(request: SentRequest) -> Response:
        assert request.headers is not None
        return Response(204 if request.headers["Authorization"] == "Bearer t2" else 401, None, b"")

    transport = MockTransport(handler)
    auth = RenewingAuth()
    s = Sender(transport, "http://api.test", policy=RetryPolicy(max_attempts=1), auth=auth, sleep=clock.sleep)
    result = await s.send(REQUEST)
    assert (result.status, result.attempts, auth.renewals) == (Status.OK, 2, 1)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"code": 400, "message": "bad\\nthing"}}', "HTTP 400: 400: bad thing"),
        (b'{"error": "nope"}', "HTTP 400: nope"),
        (b'{"message": "plain"}', "HTTP 400: plain"),
        (b"<html>" + b"x" * 500, "HTTP 400"),
        (b"", "HTTP 400"),
    ],
)
def test_describe_error(body: bytes, expected: str) -> None:
    assert describe_error(Response(400, None, body)) == expected


async def test_requests_are_counted_by_outcome_and_retries_counted() -> None:
    clock = FakeClock()
    transport = script(
        Response(503, None, b""),
        TransportError("timeout", "timed out"),
        Response(200, None, b"{}"),
        Response(404, None, b""),
    )
    send = sender(transport, clock, backoff_base=1.0)
    await send.send(REQUEST)
    await send.send(REQUEST)
    assert (send.answered[2], send.answered[4], send.answered[5]) == (1, 1, 1)
    assert send.unanswered == {"timeout": 1}
    assert (send.retries, send.requests) == (2, 4)


async def test_common_error_shapes_keep_the_apis_message(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\n")
    bodies = {
        "w1": {"detail": [{"loc": ["body", "name"], "msg": "too long"}]},
        "w2": {"title": "Unprocessable", "errors": [{"field": "name", "message": "taken"}]},
    }

    def handler(request: SentRequest) -> Response:
        return Response(422, None, orjson.dumps(bodies[request.url.rsplit("/", 1)[1]]))

    await run_on_fake_clock(run_options(source), MockTransport(handler))
    errors = {r["key"]: r["error"] for r in ledger_rows(f"{source}.ledger.jsonl")}
    assert errors == {"w1": "HTTP 422: body.name: too long", "w2": "HTTP 422: Unprocessable; name: taken"}


async def test_a_rejected_static_token_stops_the_run_and_records_nothing(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(500)))
    transport = MockTransport(lambda _: Response(401, None, b'{"error":{"message":"expired"}}'))
    with pytest.raises(CredentialsRejected, match="credentials rejected") as caught:
        await run_on_fake_clock(run_options(source, token=ECHOED_SECRET, concurrency=16), transport)
    assert len(transport.requests) <= 16
    assert ledger_rows(f"{source}.ledger.jsonl") == []
    assert isinstance(caught.value.result, RunResult) and caught.value.result.requests == len(
        transport.requests
    )


async def test_a_403_after_successes_fails_only_its_row(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\nw2,b\nw3,c\n")

    def handler(request: SentRequest) -> Response:
        return Response(403 if request.url.endswith("w2") else 204, None, b"")

    result = await run_on_fake_clock(run_options(source, concurrency=1), MockTransport(handler))
    assert [r["status"] for r in ledger_rows(f"{source}.ledger.jsonl")] == ["ok", "failed", "ok"]
    assert result.exit_code == 1


async def test_the_first_rows_all_failing_alike_stop_the_run(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(300)))
    transport = MockTransport(lambda _: Response(404, None, b""))
    with pytest.raises(WrongTarget, match="first 50 rows sent all failed with HTTP 404"):
        await run_on_fake_clock(run_options(source, concurrency=4), transport)
    assert 50 <= len(ledger_rows(f"{source}.ledger.jsonl")) <= 54
    assert len(transport.requests) <= 54


async def test_some_404s_among_successes_do_not_stop_the_run(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\n" + "".join(f"w{i},a\n" for i in range(120)))

    def handler(request: SentRequest) -> Response:
        return Response(204 if request.url.endswith("w7") else 404, None, b"")

    result = await run_on_fake_clock(run_options(source, concurrency=1), MockTransport(handler))
    assert result.tally.total == 120


async def test_no_credentials_at_all_says_so(tmp_path: Path) -> None:
    source = write(tmp_path / "in.csv", "workload_id,name\nw1,a\n")
    with pytest.raises(CredentialsRejected, match="no credentials are set"):
        await Run(
            RunOptions(input=str(source), base_url=API), transport=MockTransport(lambda _: Response(401))
        ).execute()
