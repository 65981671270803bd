from __future__ import annotations

from collections.abc import Iterator, Mapping

import orjson
import pytest
from fakes import FakeClock, FakeTransport

from bulkpatch.engine.retry import RetryPolicy
from bulkpatch.engine.sender import Sender, describe_error
from bulkpatch.errors import TransportError
from bulkpatch.http.transport import Response
from bulkpatch.records.ledger import Status
from bulkpatch.rows.mapping import Request

REQUEST = Request(row=3, line=4, key="w1", path="/workloads/w1", body=b'{"name":"x"}')


def script(*answers: Response | TransportError) -> FakeTransport:
    """A transport that gives these answers in order."""
    it: Iterator[Response | TransportError] = iter(answers)
    return FakeTransport(lambda *_: next(it))


def sender(transport: FakeTransport, clock: FakeClock, **policy: float) -> Sender:
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
    assert transport.calls[0].url == "http://api.test/workloads/w1"
    assert transport.calls[0].method == "PATCH"
    assert transport.calls[0].body == b'{"name":"x"}'
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
    assert len(transport.calls) == 1


async def test_gives_up_after_max_attempts() -> None:
    clock = FakeClock()
    transport = FakeTransport(lambda *_: Response(502, None, b"bad gateway"))
    result = await sender(transport, clock, max_attempts=4).send(REQUEST)
    assert result.status is Status.FAILED
    assert (result.http_status, result.attempts) == (502, 4)
    assert result.error == "HTTP 502: bad gateway (gave up after 4 attempts)"
    assert len(transport.calls) == 4


async def test_one_attempt_given_up_reads_in_the_singular() -> None:
    transport = FakeTransport(lambda *_: Response(503, None, b"busy"))
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

    def handler(method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None) -> Response:
        assert headers is not None
        return Response(204 if headers["Authorization"] == "Bearer t2" else 401, None, b"")

    transport = FakeTransport(handler)
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
