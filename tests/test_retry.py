from __future__ import annotations

import random
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path

import pytest
from helpers import (
    API,
    ledger_rows,
    run_on_fake_clock,
    run_options,
    write,
)
from tenacity import RetryCallState

from bulkpatch.engine.backoff import wait_retry_after_or_jitter
from bulkpatch.engine.retry import RetryPolicy, is_retryable, parse_retry_after
from bulkpatch.engine.run import Run
from bulkpatch.engine.sender import Attempt
from bulkpatch.errors import (
    TransportError,
)
from bulkpatch.http.transport import Response
from bulkpatch.options import RunOptions
from bulkpatch.records.resume import RetryFailed
from bulkpatch.rows.schema import Schema
from bulkpatch.testing import MockTransport, SentRequest


@pytest.mark.parametrize("status", [None, 408, 425, 429, 500, 502, 503, 504])
def test_retryable(status: int | None) -> None:
    assert is_retryable(status)


@pytest.mark.parametrize("status", [200, 204, 400, 401, 403, 404, 409, 415, 422, 501])
def test_final(status: int) -> None:
    assert not is_retryable(status)


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 2.5 ", now=now) == 2.5
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "-3"):
        assert parse_retry_after(bad, now=now) is None


def state_after(attempt_number: int, outcome: Attempt) -> RetryCallState:
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = attempt_number
    state.set_result(outcome)
    return state


def test_wait_honours_retry_after_capped() -> None:
    wait = wait_retry_after_or_jitter(RetryPolicy(retry_after_cap=60))
    assert wait(state_after(1, Attempt(429, "x", 12.0, True, 1))) == 12.0
    assert wait(state_after(1, Attempt(429, "x", 3600.0, True, 1))) == 60.0


def test_wait_is_full_jitter_under_a_doubling_ceiling() -> None:
    random.seed(1)
    wait = wait_retry_after_or_jitter(RetryPolicy(backoff_base=0.5, backoff_cap=4))
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        draws = [wait(state_after(attempt, Attempt(503, "x", None, True, 1))) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in draws)
        # Full jitter: the draws spread over the whole interval, not bunched at its top.
        assert min(draws) < ceiling * 0.1 and max(draws) > ceiling * 0.9


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(("unsafe", "requests"), [(False, 1), (True, 3)])
async def test_a_post_is_resent_after_a_dropped_answer_only_when_asked(
    tmp_path: Path, unsafe: bool, requests: int
) -> None:
    source = write(tmp_path / "in.jsonl", '{"name": "a"}\n')

    def handler(request: SentRequest) -> Response:
        raise TransportError("disconnect", "server closed the connection")

    transport = MockTransport(handler)
    opts = run_options(
        source, method="POST", path="/things", schema="any", max_attempts=3, retry_unsafe=unsafe
    )
    await run_on_fake_clock(opts, transport)
    assert len(transport.requests) == requests
    (record,) = ledger_rows(f"{source}.ledger.jsonl")
    assert record["status"] == "failed"
    assert ("--retry-unsafe" in str(record["error"])) is not unsafe


async def test_retry_failed_does_not_resend_an_unsure_post_without_retry_unsafe(tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", '{"name": "new-thing"}\n')
    calls: list[str] = []

    def handler(request: SentRequest) -> Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise TransportError("disconnect", "server disconnected")  # after the whole request
        return Response(201, None, b"{}")

    options = RunOptions(input=str(source), base_url=API, method="POST", path="/things", schema=Schema.ANY)
    first = await Run(options, transport=MockTransport(handler)).execute()
    assert first.exit_code == 1 and calls == ["POST"]
    again = replace(options, retry_failed=RetryFailed.TRANSIENT)
    await Run(again, transport=MockTransport(handler)).execute()
    assert calls == ["POST"]  # today: sent again
