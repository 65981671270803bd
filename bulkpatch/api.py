"""The library's front door: ``bulkpatch.run(...)`` and ``await bulkpatch.run_async(...)``.

The same options as ``bulkpatch run`` (as keyword arguments named like the flags), rows from a
file path or from any iterable or async iterable of mappings, an optional ``transform`` that
builds each row's fields in code, and ``on_result`` to see every outcome as it is recorded.

>>> import bulkpatch                                                    # doctest: +SKIP
>>> summary = bulkpatch.run(
...     [{"workload_id": "w-1", "name": "db-01"}],
...     base_url="https://eu2-cloud.acronis.com", token="...", ledger="rename.ledger.jsonl",
... )
>>> summary.exit_code
0
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from bulkpatch.engine.assembly import Transform
from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError
from bulkpatch.http.transport import Transport
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult
from bulkpatch.records.results import RunResult

Rows = str | os.PathLike[str] | Iterable[Any] | AsyncIterable[Any]


async def run_async(
    rows: Rows,
    *,
    transform: Transform | None = None,
    on_result: Callable[[RowResult], None] | None = None,
    transport: Transport | None = None,
    **options: Any,
) -> RunResult:
    """Send one request per row and return what the run did; see the module docstring.

    ``rows`` given in code need ``ledger=`` (a path, or ``os.devnull`` to keep none). Errors that
    stop a run raise (``ConfigError``, ``CredentialsRejected``, ``ApiUnreachable``…); rows that
    fail are outcomes, not exceptions.
    """
    if isinstance(rows, (str, os.PathLike)):
        opts = RunOptions(input=os.fspath(rows), **options)
        return await Run(opts, transport=transport, transform=transform, on_result=on_result).execute()
    if not options.get("ledger"):
        raise ConfigError("rows given in code need ledger=PATH to record and resume the run (or os.devnull)")
    opts = RunOptions(input="<rows>", **options)
    run = Run(opts, transport=transport, rows=rows, transform=transform, on_result=on_result)
    return await run.execute()


def run(
    rows: Rows,
    *,
    transform: Transform | None = None,
    on_result: Callable[[RowResult], None] | None = None,
    transport: Transport | None = None,
    **options: Any,
) -> RunResult:
    """``run_async`` for code that has no event loop running."""
    return asyncio.run(
        run_async(rows, transform=transform, on_result=on_result, transport=transport, **options)
    )
