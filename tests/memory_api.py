"""A fake API for the memory's tests: it applies PATCHes and can refuse ids; and one night's run."""

from __future__ import annotations

from pathlib import Path

import orjson
from helpers import FakeClock, write

from bulkpatch.engine.run import Run
from bulkpatch.http.transport import Response
from bulkpatch.options import RunOptions
from bulkpatch.records.results import RunResult
from bulkpatch.testing import MockTransport, SentRequest

BASE = "http://api.test"


def inventory(path: Path, names: dict[str, str]) -> Path:
    return write(path, "workload_id,name\n" + "".join(f"{k},{v}\n" for k, v in names.items()))


class Api:
    """A fake API that applies PATCHes, and can refuse some ids."""

    def __init__(self) -> None:
        self.store: dict[str, str] = {}
        self.refuse: set[str] = set()
        self.transport = MockTransport(self.handle)

    def handle(self, request: SentRequest) -> Response:
        key = request.url.rsplit("/", 1)[1]
        if key in self.refuse:
            return Response(500, None, b"")
        self.store[key] = orjson.loads(request.body or b"{}")["name"]
        return Response(204, None, b"")

    @property
    def sent(self) -> list[str]:
        return [c.url.rsplit("/", 1)[1] for c in self.transport.requests]


async def night(api: Api, source: Path, state: Path, **kw: object) -> RunResult:
    api.transport.requests.clear()
    opts = RunOptions(
        **{"input": str(source), "base_url": BASE, "state": str(state), "max_attempts": 1, **kw}
    )  # type: ignore[arg-type]
    clock = FakeClock()
    return await Run(opts, transport=api.transport, sleep=clock.sleep, clock=clock).execute()
