"""Telling a run's owner, end to end: a 300-row run with failures against the mock on 127.0.0.1,
its metrics file, its stderr as JSON lines and its webhook."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from helpers import ThreadedMock, write
from prometheus_client.parser import text_string_to_metric_families

from bulkpatch.cli.main import cli
from bulkpatch.cli.telling import summary_text
from bulkpatch.mock import MockConfig
from bulkpatch.mock.store import sample_workloads
from bulkpatch.records.outcome import Outcome

TOKEN = "static-token-4f9a1c"


class Webhook:
    """An incoming webhook on 127.0.0.1 in a thread of its own; keeps every POST it gets."""

    def __init__(self, status: int = 200) -> None:
        self.posts: list[bytes] = []
        self._status = status
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    async def _start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.posts.append(await request.read())
            return web.Response(status=self._status)

        app = web.Application()
        app.router.add_post("/services/T000/B000/s3cr3t-path", hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/services/T000/B000/s3cr3t-path"

    def __enter__(self) -> Webhook:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def mock() -> Iterator[ThreadedMock]:
    with ThreadedMock(MockConfig(workloads=280, static_tokens=(TOKEN,))) as server:
        yield server


def three_hundred_rows(tmp_path: Path) -> Path:
    """280 workloads that exist, 10 that do not (404) and 10 rows without an id (invalid)."""
    rows = [f"{w['id']},renamed-{i}" for i, w in enumerate(sample_workloads(280))]
    rows += [f"missing-{i:04d},x" for i in range(10)] + [",no-id"] * 10
    return write(tmp_path / "nightly.csv", "workload_id,name\n" + "\n".join(rows) + "\n")


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.slow
def test_a_run_with_failures_leaves_metrics_json_lines_and_one_webhook_post(
    tmp_path: Path, mock: ThreadedMock
) -> None:
    source = three_hundred_rows(tmp_path)
    metrics = tmp_path / "bulkpatch.prom"
    env = {"BULKPATCH_TOKEN": TOKEN}
    with Webhook() as hook:
        result = invoke(
            "run", str(source), "--base-url", mock.url, "--log-format", "json",
            "--metrics-file", str(metrics), "--notify", hook.url, env=env,
        )  # fmt: skip
    assert result.exit_code == 1
    # Every stderr line is one JSON object; the last is the end event.
    lines = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["done"] == 0
    end = lines[-1]
    assert end["event"] == "end" and end["exit_code"] == 1
    expected = {"ok": 280, "failed": 10, "invalid": 10, "skipped": 0, "unchanged": 0, "already_done": 0}
    assert end["rows"] == expected
    assert end["requests"] == 290 and end["ledger"] == f"{source}.ledger.jsonl"
    assert any("--failed-out" in hint for hint in end["hints"])
    assert result.stdout == ""  # the end event is the summary
    # The metrics file, read by prometheus_client's own parser.
    samples = [s for f in text_string_to_metric_families(metrics.read_text()) for s in f.samples]
    rows = {s.labels["status"]: s.value for s in samples if s.name == "bulkpatch_rows_total"}
    assert sum(rows.values()) == 300 and rows["failed"] == 10 and rows["invalid"] == 10
    assert [s.value for s in samples if s.name == "bulkpatch_exit_code"] == [1]
    requests = {s.labels["outcome"]: s.value for s in samples if s.name == "bulkpatch_requests_total"}
    assert (requests["2xx"], requests["4xx"]) == (280, 10)
    assert TOKEN not in metrics.read_text() and mock.url not in metrics.read_text()
    # One POST, with text for a chat channel, the exit status and no secret.
    assert len(hook.posts) == 1
    payload = orjson.loads(hook.posts[0])
    assert payload["exit_code"] == 1 and payload["rows"]["failed"] == 10
    assert "exit 1" in payload["text"] and "missing workload_id" in payload["text"]
    assert TOKEN.encode() not in hook.posts[0] and b"s3cr3t" not in hook.posts[0]


@pytest.mark.slow
def test_a_webhook_that_fails_is_one_warning_and_the_exit_status_stands(
    tmp_path: Path, mock: ThreadedMock
) -> None:
    source = three_hundred_rows(tmp_path)
    env = {"BULKPATCH_TOKEN": TOKEN}
    with Webhook(status=500) as hook:
        result = invoke("run", str(source), "--base-url", mock.url, "-q", "--notify", hook.url, env=env)
    assert result.exit_code == 1 and len(hook.posts) == 1
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    host = hook.url.split("/services")[0]
    assert warnings == [f"bulkpatch: warning: notifying {host} failed: HTTP 500 (the run's outcome stands)"]
    assert "s3cr3t" not in result.stderr


@pytest.mark.slow
def test_notify_on_failure_stays_quiet_after_a_clean_run(tmp_path: Path, mock: ThreadedMock) -> None:
    rows = [f"{w['id']},renamed-{i}" for i, w in enumerate(sample_workloads(20))]
    source = write(tmp_path / "ok.csv", "workload_id,name\n" + "\n".join(rows) + "\n")
    env = {"BULKPATCH_TOKEN": TOKEN}
    with Webhook() as hook:
        quiet = invoke("run", str(source), "--base-url", mock.url, "-q", "--notify", hook.url, env=env)
        assert quiet.exit_code == 0 and hook.posts == []
        always = invoke(
            "run", str(source), "--base-url", mock.url, "-q", "--notify", hook.url, "--notify-on", "always",
            env=env,
        )  # fmt: skip
    assert always.exit_code == 0 and len(hook.posts) == 1
    assert orjson.loads(hook.posts[0])["exit_code"] == 0


@pytest.mark.slow
def test_a_stopped_run_writes_metrics_and_offers_no_rows_to_fix(tmp_path: Path, mock: ThreadedMock) -> None:
    source = three_hundred_rows(tmp_path)
    metrics = tmp_path / "bulkpatch.prom"
    env = {"BULKPATCH_TOKEN": TOKEN}
    result = invoke(
        "run", str(source), "--base-url", mock.url, "--path", "/api/nothing/{workload_id}",
        "--metrics-file", str(metrics), env=env,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--failed-out" not in result.stdout and "check --base-url and --path" in result.stdout
    assert result.stderr.splitlines()[-1].startswith("bulkpatch: error: the first 50 rows")
    samples = [s for f in text_string_to_metric_families(metrics.read_text()) for s in f.samples]
    assert [s.value for s in samples if s.name == "bulkpatch_exit_code"] == [1]


@pytest.mark.slow
def test_json_lines_hold_for_usage_and_configuration_errors(tmp_path: Path) -> None:
    source = write(tmp_path / "a.csv", "workload_id,name\nw1,x\n")
    metrics = tmp_path / "bulkpatch.prom"
    usage = invoke("run", str(source), "--log-format", "json", "--no-such-option")
    refused = invoke("run", str(source), "--log-format=json", "--metrics-file", str(metrics))
    for result in (usage, refused):
        assert result.exit_code == 2
        (line,) = result.stderr.splitlines()
        record = orjson.loads(line)
        assert (record["event"], record["level"], record["exit_code"]) == ("end", "error", 2)
    assert "--no-such-option" in orjson.loads(usage.stderr)["error"]
    assert "--base-url" in orjson.loads(refused.stderr)["error"]
    # A configuration error, once the options are parsed, still leaves its metrics.
    samples = [s for f in text_string_to_metric_families(metrics.read_text()) for s in f.samples]
    assert [s.value for s in samples if s.name in ("bulkpatch_exit_code", "bulkpatch_run_began")] == [2, 0]


@pytest.mark.slow
def test_a_notice_from_the_engine_is_a_json_line_too(tmp_path: Path, mock: ThreadedMock) -> None:
    ids = [w["id"] for w in sample_workloads(3)]
    source = write(tmp_path / "a.csv", "workload_id,name\n" + "".join(f"{i},one\n" for i in ids))
    env = {"BULKPATCH_TOKEN": TOKEN}
    assert invoke("run", str(source), "--base-url", mock.url, "-q", env=env).exit_code == 0
    write(source, "workload_id,name\n" + "".join(f"{i},two\n" for i in ids))  # the input changed
    result = invoke("run", str(source), "--base-url", mock.url, "--log-format", "json", env=env)
    records = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert "notice" in [r["event"] for r in records]
    assert records[-1]["event"] == "end" and records[-1]["exit_code"] == 0


def test_urls_in_the_text_lose_their_credentials_and_query() -> None:
    outcome = Outcome(2, 1.0, 0.1, error="cannot reach https://ops:hunter2@api.test/v1?sig=abc123 (refused)")
    text = summary_text(outcome)
    assert "hunter2" not in text and "abc123" not in text
    assert "https://***@api.test/v1?***" in text
    assert "refused before sending anything (exit 2)" in text
