"""What the tests share: a clock that never waits, files, the mock API in a thread, spawned runs.

The transport without sockets is the shipped ``bulkpatch.testing.MockTransport``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson
from aiohttp import ClientResponse
from yarl import URL

from bulkpatch.engine.run import Run
from bulkpatch.http.transport import Transport
from bulkpatch.mock import MockConfig, MockServer
from bulkpatch.mock.store import sample_workloads
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import iter_records
from bulkpatch.records.results import RunResult
from bulkpatch.testing import Response, SentRequest

#: the API root of the unit tests: never resolved, MockTransport answers
API = "http://api.test"
#: a token the API echoes back, and a long one cut in the middle of an error message
ECHOED_SECRET = "s3cr3t-T0KEN-value"
LONG_SECRET = "sk-live-" + "Q7wX9pL2" * 6


def run_options(source: Path, **kw: object) -> RunOptions:
    """The options of a run of ``source`` against ``API``."""
    return RunOptions(**{"input": str(source), "base_url": API, **kw})  # type: ignore[arg-type]


async def run_on_fake_clock(opts: RunOptions, transport: Transport) -> RunResult:
    """A run whose waits (backoff, pacing) pass in no time."""
    clock = FakeClock()
    return await Run(opts, transport=transport, sleep=clock.sleep, clock=clock).execute()


async def no_wait(seconds: float) -> None:
    return None


def ledger_rows(ledger: str | Path) -> list[dict[str, object]]:
    """The row records of a ledger (its header and events left out)."""
    return [r for r in iter_records(ledger) if r.get("type") == "row"]


class NamesApi:
    """A ``MockTransport`` handler that keeps the last name applied to each workload id."""

    def __init__(self, refuse: Mapping[str, int] | None = None) -> None:
        #: workload id -> the name the API holds now
        self.names: dict[str, str] = {}
        #: every name sent, in arrival order
        self.sent: list[str] = []
        #: names answered with this status instead of being applied
        self.refuse = dict(refuse or {})

    def __call__(self, request: SentRequest) -> Response:
        name = orjson.loads(request.body or b"{}")["name"]
        self.sent.append(name)
        status = self.refuse.get(name)
        if status is not None:
            return Response(status, None, b'{"error":{"code":"Nope","message":"refused"}}')
        self.names[request.url.rsplit("/", 1)[1]] = name
        return Response(204, None, b"")


def ok(request: SentRequest) -> Response:
    """A ``MockTransport`` handler that applies everything: 204."""
    return Response(204, None, b"")


class FakeClock:
    """A monotonic clock that ``sleep`` advances instead of waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def write(path: Path, text: str | bytes) -> Path:
    """Write ``text`` (UTF-8) or bytes to ``path`` and return it."""
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def fleet_csv(tmp_path: Path, n: int, prefix: str = "name") -> Path:
    """``fleet.csv``: the ids of the mock's first ``n`` workloads, each renamed ``PREFIX-I``."""
    rows = "".join(f"{w['id']},{prefix}-{i}\n" for i, w in enumerate(sample_workloads(n)))
    return write(tmp_path / "fleet.csv", "workload_id,name\n" + rows)


#: the environment of a spawned run: none of the machine's BULKPATCH_ variables
ENV = {k: v for k, v in os.environ.items() if not k.startswith("BULKPATCH_")}


def bulkpatch_cli(
    *args: str, env: dict[str, str] | None = None, stdin: IO[bytes] | int | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m bulkpatch ARGS`` to the end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bulkpatch", *args],
        env=ENV if env is None else env,
        stdin=stdin,
        capture_output=True,
        timeout=120,
    )


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """``bulkpatch ARGS`` running in the background, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "bulkpatch", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def spawn_run(source: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    """``bulkpatch run SOURCE --base-url URL --no-progress EXTRA`` in the background."""
    return spawn("run", str(source), "--base-url", url, "--no-progress", *extra)


class _NoUpload:
    output_size = 0


class CompatResponse(ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's new ``stream_writer`` argument
    (pnuckowski/aioresponses#289); pass ``response_class=CompatResponse`` until it is fixed."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoUpload())
        super().__init__(method, url, **kwargs)


class ThreadedMock:
    """The mock API served from a thread of its own, for tests that drive the CLI synchronously
    or in a subprocess. ``with ThreadedMock(config) as mock: mock.url, mock.api.counters``."""

    def __init__(self, config: MockConfig) -> None:
        self.server = MockServer(config)
        self.api = self.server.api
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> ThreadedMock:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
