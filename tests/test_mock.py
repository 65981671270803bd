"""The mock API, spoken to over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from click.testing import CliRunner

from bulkpatch.cli.main import cli
from bulkpatch.errors import ConfigError
from bulkpatch.mock import MockConfig, MockServer, WorkloadStore

API = "/api/workload_management/v5/workloads"


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer(MockConfig(workloads=35, client_id="cid", client_secret="sec")) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def token(http: aiohttp.ClientSession, server: MockServer) -> dict[str, str]:
    async with http.post(
        f"{server.url}/api/2/idp/token",
        headers=basic("cid", "sec"),
        data={"grant_type": "client_credentials"},
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["token_type"] == "bearer" and body["expires_on"] > 0
    return {"Authorization": f"Bearer {body['access_token']}"}


async def test_token_needs_the_right_client_credentials(
    http: aiohttp.ClientSession, server: MockServer
) -> None:
    for path in ("/api/2/idp/token", "/bc/idp/token"):
        async with http.post(
            server.url + path, headers=basic("cid", "wrong"), data={"grant_type": "client_credentials"}
        ) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "UnauthorizedRequest"
    async with http.post(
        f"{server.url}/bc/idp/token", headers=basic("cid", "sec"), data={"grant_type": "password"}
    ) as resp:
        assert resp.status == 400


async def test_api_needs_a_token(http: aiohttp.ClientSession, server: MockServer) -> None:
    async with http.get(server.url + API) as resp:
        assert resp.status == 401
    async with http.get(server.url + API, headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401


async def test_patch_then_get_shows_the_change(http: aiohttp.ClientSession, server: MockServer) -> None:
    auth = await token(http, server)
    async with http.get(f"{server.url}{API}?limit=1&include_all_attributes=true", headers=auth) as resp:
        first = (await resp.json())["items"][0]
    url = f"{server.url}{API}/{first['id']}"
    async with http.patch(url, json={"name": "renamed", "attributes": {"site": "x"}}, headers=auth) as resp:
        assert resp.status == 204
        assert await resp.read() == b""
    async with http.get(url, headers=auth) as resp:
        after = await resp.json()
    assert after["name"] == "renamed"
    assert after["attributes"]["site"] == "x"
    assert after["attributes"]["hostname"] == first["attributes"]["hostname"]  # merged, not replaced
    assert after["updated_at"] != first["updated_at"]


@pytest.mark.parametrize(
    ("target", "body", "content_type", "status", "code"),
    [
        ("unknown-id", b'{"name": "x"}', "application/json", 404, "NotFound"),
        (None, b'{"colour": "red"}', "application/json", 400, "ValidationError"),
        (None, b'{"enabled": "yes"}', "application/json", 400, "ValidationError"),
        (None, b'{"name": "x"}', "text/plain", 415, "UnsupportedMediaType"),
        (None, b"[1]", "application/json", 400, "BadRequest"),
    ],
)
async def test_patch_errors_use_the_envelope(
    http: aiohttp.ClientSession,
    server: MockServer,
    target: str | None,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    auth = await token(http, server)
    workload_id = target or next(iter(server.api.store._items))
    headers = {**auth, "Content-Type": content_type}
    async with http.patch(f"{server.url}{API}/{workload_id}", data=body, headers=headers) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["code"] == code and error["message"]


async def test_paging_visits_every_workload_once(http: aiohttp.ClientSession, server: MockServer) -> None:
    auth = await token(http, server)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": "10"} if after is None else {"limit": "10", "after": after}
        async with http.get(server.url + API, params=params, headers=auth) as resp:
            page = await resp.json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        assert "attributes" not in page["items"][0]  # omitted unless asked for
        after = page["paging"]["cursors"].get("after")
        if after is None:
            break
    assert pages == 4
    assert len(seen) == 35 and len(set(seen)) == 35


async def test_filters_create_and_delete(http: aiohttp.ClientSession, server: MockServer) -> None:
    auth = await token(http, server)
    new = {"id": "new-1", "name": "fresh", "attributes": {"a": "1"}}
    async with http.post(server.url + API, json={"items": [new]}, headers=auth) as resp:
        assert resp.status == 204
    ids = "or(new-1,missing)"
    async with http.get(
        server.url + API,
        params={"workload_id": ids, "include_attributes": "a", "include_allowed_actions": "true"},
        headers=auth,
    ) as resp:
        items = (await resp.json())["items"]
    assert [(i["id"], i["attributes"], i["allowed_actions"]) for i in items] == [("new-1", {"a": "1"}, [])]
    async with http.delete(server.url + API, params={"workload_id": "new-1"}, headers=auth) as resp:
        assert resp.status == 204
    async with http.get(f"{server.url}{API}/new-1", headers=auth) as resp:
        assert resp.status == 404


async def test_faults_are_injected_and_counted(http: aiohttp.ClientSession) -> None:
    config = MockConfig(require_auth=False, workloads=5, error_rate=0.5, seed=3)
    async with MockServer(config) as server:
        workload_id = next(iter(server.api.store._items))
        statuses = []
        for _ in range(40):
            async with http.patch(f"{server.url}{API}/{workload_id}", json={"name": "n"}) as resp:
                statuses.append(resp.status)
        async with http.get(f"{server.url}/__mock__/stats") as resp:
            stats = await resp.json()
    assert set(statuses) == {204, 503}
    assert stats["by_status"] == {"204": statuses.count(204), "503": statuses.count(503)}
    assert stats["patches"][workload_id] == statuses.count(204)


async def test_rate_limit_answers_429_with_retry_after(http: aiohttp.ClientSession) -> None:
    async with MockServer(MockConfig(require_auth=False, rate_limit=5, retry_after=2)) as server:
        answers = []
        for _ in range(8):
            async with http.get(server.url + API) as resp:
                answers.append((resp.status, resp.headers.get("Retry-After")))
    assert answers[:5] == [(200, None)] * 5
    assert (429, "2") in answers[5:]


async def test_dropped_connection(http: aiohttp.ClientSession) -> None:
    async with MockServer(MockConfig(require_auth=False, drop_rate=1.0)) as server:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with http.get(server.url + API):
                pass


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PUT", f"{API}/some-id", b"{}", 405, "MethodNotAllowed"),
        ("GET", f"{API}/some-id/extra", None, 404, "NotFound"),
        ("GET", "/api/workload_management/v5/nothing-here", None, 404, "NotFound"),
        ("GET", "/api/workload_management/v4/workloads", None, 404, "NotFound"),
        ("GET", "/__mock__/nope", None, 404, "NotFound"),
        ("PATCH", f"{API}/some-id", b'{"name": "' + b"x" * (1 << 20) + b'"}', 413, "PayloadTooLarge"),
    ],
)
async def test_errors_aiohttp_raises_itself_use_the_envelope(
    http: aiohttp.ClientSession,
    server: MockServer,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    code: str,
) -> None:
    headers = {**await token(http, server), "Content-Type": "application/json"}
    data = io.BytesIO(body) if body is not None else None  # aiohttp warns about large raw bytes
    async with http.request(method, server.url + path, data=data, headers=headers) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        error = (await resp.json())["error"]
        allow = resp.headers.get("Allow")
    assert error["code"] == code and error["message"] and error["details"]["info"]
    assert (allow is not None) == (status == 405)
    # API calls are counted by the status they were answered with.
    assert server.api.counters.by_status[status] == (
        1 if path.startswith("/api/workload_management/v5/") else 0
    )


async def test_a_crash_in_a_handler_is_a_500_in_the_envelope(
    http: aiohttp.ClientSession, server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> bool:
        raise RuntimeError("boom")

    monkeypatch.setattr(server.api.store, "update", broken)
    auth = await token(http, server)
    async with http.patch(f"{server.url}{API}/some-id", json={"name": "n"}, headers=auth) as resp:
        assert resp.status == 500
        assert (await resp.json())["error"]["code"] == "InternalServerError"


async def test_stats_count_only_patches_that_found_their_workload(
    http: aiohttp.ClientSession, server: MockServer
) -> None:
    auth = await token(http, server)
    workload_id = next(iter(server.api.store._items))
    for target in (workload_id, "missing", "missing", workload_id):
        async with http.patch(f"{server.url}{API}/{target}", json={"name": "n"}, headers=auth):
            pass
    async with http.get(f"{server.url}/__mock__/stats") as resp:
        stats = await resp.json()
    assert stats["patches"] == {workload_id: 2}
    assert (stats["patched_ids"], stats["duplicate_patches"]) == (1, 1)
    assert stats["patches_not_found"] == {"missing": 2}


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("workload_id,name\nabc,renamed\n", 1, "not JSON"),
        ('{"id": "a"}\n\n[1, 2]\n', 3, "expected a workload object, got a JSON list"),
        ('{"id": "a"}\n{"name": "no id"}\n', 2, '"id"'),
        ('{"id": "a", "attributes": ["x"]}\n', 1, "'attributes' must be a JSON object"),
        ('{"id": "a"}\n{"id": "b"\n', 2, "not JSON"),
    ],
)
def test_a_bad_seed_file_is_a_config_error_naming_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = tmp_path / "seed.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        WorkloadStore.from_jsonl(str(path))
    message = str(info.value)
    assert f"seed file {path}, line {line}: " in message and problem in message
    assert "\n" not in message


def test_a_seed_file_may_start_with_a_bom_and_leave_out_attributes(tmp_path: Path) -> None:
    path = tmp_path / "seed.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "name": "x"}\n\n{"id": 7}\n')
    store = WorkloadStore.from_jsonl(str(path))
    assert len(store) == 2
    assert store.get("a") == {"id": "a", "name": "x", "attributes": {}, "allowed_actions": []}


def test_mock_command_with_a_csv_seed_file_says_so_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("workload_id,name\nabc,renamed\n")
    result = CliRunner().invoke(cli, ["mock", "--seed-file", str(path), "--port", "0"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bulkpatch: error: seed file {path}, line 1: not JSON")
    assert "Traceback" not in result.output


_SERVE = """
import asyncio, sys
from bulkpatch.mock import MockConfig, MockServer

async def main():
    server = MockServer(MockConfig(workloads=3, persist=sys.argv[1]))
    await server.serve_until_stopped(ready=lambda: print(server.url, flush=True))

asyncio.run(main())
"""


@pytest.mark.slow  # a subprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_until_stopped_saves_the_store_on_sigterm_and_sigint(
    tmp_path: Path, signum: signal.Signals
) -> None:
    saved = tmp_path / "store.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVE,
        str(saved),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    url = (await proc.stdout.readline()).decode().strip()
    assert url.startswith("http://127.0.0.1:"), url
    proc.send_signal(signum)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    items = [orjson.loads(line) for line in saved.read_bytes().splitlines()]
    assert len(items) == 3


def test_the_persisted_store_is_private_and_no_file_beside_it_is_touched(tmp_path: Path) -> None:
    from bulkpatch.mock.store import WorkloadStore, sample_workloads

    saved = tmp_path / "store.jsonl"
    saved.write_text("old\n")
    saved.chmod(0o644)
    mine = tmp_path / "store.jsonl.tmp"
    mine.write_text("mine\n")
    WorkloadStore(sample_workloads(3), persist=str(saved)).save()
    assert saved.stat().st_mode & 0o777 == 0o600
    assert len(saved.read_text().splitlines()) == 3
    assert mine.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.jsonl", "store.jsonl.tmp"]
