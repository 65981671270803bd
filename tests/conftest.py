from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from helpers import ThreadedMock
from local_server import LocalServer, serve

from bulkpatch.mock import MockConfig, MockServer


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit credentials or a base URL from the machine running them."""
    for name in list(os.environ):
        if name.startswith("BULKPATCH_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def mock_server() -> AsyncIterator[MockServer]:
    """The project's mock API on 127.0.0.1, no auth, no faults."""
    async with MockServer(MockConfig(require_auth=False, workloads=50)) as server:
        yield server


@pytest.fixture
def api() -> Iterator[ThreadedMock]:
    """The mock API (300 workloads, no auth) in a thread, for tests that spawn ``bulkpatch``."""
    with ThreadedMock(MockConfig(require_auth=False, workloads=300)) as server:
        yield server


@pytest.fixture
async def http_server() -> AsyncIterator[LocalServer]:
    """An aiohttp server on 127.0.0.1 that misbehaves on request (see ``local_server.py``)."""
    async with serve() as server:
        yield server
