"""OAuth2 client credentials against the mock's token endpoint on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bulkpatch.errors import AuthError
from bulkpatch.http.auth import BearerToken, ClientCredentials, token_url_for
from bulkpatch.http.transport import AiohttpTransport
from bulkpatch.mock import MockConfig, MockServer
from bulkpatch.mock import app as mock_app


async def test_one_token_for_many_concurrent_callers() -> None:
    async with MockServer(MockConfig(client_id="cid", client_secret="sec")) as server:
        async with AiohttpTransport(limit=4, timeout=5) as transport:
            auth = ClientCredentials(transport, token_url_for(server.url), "cid", "sec")
            headers = await asyncio.gather(*(auth.header() for _ in range(50)))
        assert len(set(headers)) == 1 and headers[0] is not None and headers[0].startswith("Bearer ")
        assert server.api.counters.token_requests == 1


async def test_token_is_renewed_before_it_expires_and_after_a_401() -> None:
    now = [time.time()]
    async with MockServer(MockConfig(client_id="cid", client_secret="sec", token_lifetime=100)) as server:
        async with AiohttpTransport(limit=4, timeout=5) as transport:
            auth = ClientCredentials(transport, token_url_for(server.url), "cid", "sec", clock=lambda: now[0])
            first = await auth.header()
            now[0] += 10
            assert await auth.header() == first
            now[0] += 80  # within the renewal margin (a quarter of the lifetime)
            second = await auth.header()
            assert second != first
            await auth.renew(second)  # a 401 came back for it
            third = await auth.header()
            assert third not in (first, second)
            await auth.renew(second)  # a late 401 for an already replaced token: no new fetch
            assert await auth.header() == third
        assert server.api.counters.tokens_issued == 3


async def test_wrong_secret_is_one_clear_error_without_the_secret() -> None:
    async with (
        MockServer(MockConfig(client_id="cid", client_secret="sec")) as server,
        AiohttpTransport(limit=1, timeout=5) as transport,
    ):
        auth = ClientCredentials(transport, token_url_for(server.url), "cid", "hunter2-wrong")
        with pytest.raises(AuthError) as info:
            await auth.header()
    message = str(info.value)
    assert "refused the client credentials (HTTP 401)" in message
    assert "hunter2" not in message and "hunter2" not in repr(auth)


def test_bearer_token_is_hidden_in_repr() -> None:
    assert "abc" not in repr(BearerToken("abc"))


@pytest.mark.slow
async def test_a_run_outlives_several_token_lifetimes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bulkpatch.engine.run import Run
    from bulkpatch.mock.store import sample_workloads
    from bulkpatch.options import RunOptions
    from bulkpatch.records.ledger import Status

    rows = 480
    source = tmp_path / "fleet.csv"
    source.write_text(
        "workload_id,name\n" + "".join(f"{w['id']},n{i}\n" for i, w in enumerate(sample_workloads(rows)))
    )
    started = time.time()
    now = [started]

    def clock() -> float:
        now[0] += 0.025  # each look at the token's clock is 25 ms of the run: lifetimes pass in no time
        return now[0]

    # The run builds its ClientCredentials itself: give every one the fake clock it takes; the
    # mock issues and expires tokens by the same clock.
    monkeypatch.setitem(ClientCredentials.__init__.__kwdefaults__, "clock", clock)  # type: ignore[arg-type]
    monkeypatch.setattr(mock_app, "time", SimpleNamespace(time=lambda: now[0], monotonic=time.monotonic))
    config = MockConfig(client_id="cid", client_secret="s3cret-77", token_lifetime=2.0, workloads=rows)
    events: list[str] = []
    async with MockServer(config) as server:
        options = RunOptions(
            input=str(source), base_url=server.url, concurrency=3, client_id="cid", client_secret="s3cret-77"
        )
        result = await Run(options, events=lambda e, f: events.append(e)).execute()
        elapsed = now[0] - started
        counters = server.api.counters
    assert elapsed > 3 * 2.0  # several token lifetimes
    assert result.state[Status.OK] == rows
    # Renewed ahead of expiry, once per lifetime or so; never once per request.
    assert 3 <= counters.tokens_issued <= elapsed / 1.5 + 2
    assert counters.token_requests == counters.tokens_issued
    assert events.count("token_renewed") == counters.tokens_issued
    assert "s3cret-77" not in source.with_suffix(".csv.ledger.jsonl").read_text()
