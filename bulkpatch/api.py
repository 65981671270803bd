"""The library's front door: ``bulkpatch.run(...)`` and ``await bulkpatch.run_async(...)``.

The options are ``RunOptions``' fields as named, typed keywords (named like the flags of
``bulkpatch run``), or one ``options=RunOptions(...)``; rows come from a file path or from any
iterable or async iterable of mappings; ``transform`` builds each row's fields in code and
``on_result`` sees every outcome as it is recorded. The library reads no environment variables.

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
import dataclasses
import functools
import os
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

from bulkpatch.defaults import DEFAULT_PATH
from bulkpatch.engine.assembly import Transform
from bulkpatch.engine.run import Run
from bulkpatch.errors import ConfigError, LoopRunning
from bulkpatch.http.transport import Transport
from bulkpatch.option_values import Headers
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult
from bulkpatch.records.results import RunResult
from bulkpatch.records.resume import RetryFailed
from bulkpatch.rows.schema import Schema

Rows = str | os.PathLike[str] | Iterable[Any] | AsyncIterable[Any]

P = ParamSpec("P")
T = TypeVar("T")


def blocking(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking twin of an ``async`` function: same signature, its own event loop.

    Called where a loop runs already, it raises ``LoopRunning`` before the coroutine is made, so
    that no "coroutine was never awaited" warning follows the error.
    """

    @functools.wraps(func)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(func(*args, **kwargs))
        name = func.__name__.removesuffix("_async")
        raise LoopRunning(
            f"bulkpatch.{name}() cannot run inside a running event loop; use await bulkpatch.{name}_async()"
        )

    call.__doc__ = f"``{func.__name__}`` for code that has no event loop running (blocks until done)."
    call.__name__ = call.__qualname__ = func.__name__.removesuffix("_async")
    return call


async def run_async(
    rows: Rows,
    *,
    options: RunOptions | None = None,
    base_url: str | None = None,
    format: str | None = None,
    path: str = DEFAULT_PATH,
    method: str = "PATCH",
    schema: Schema | str = Schema.WORKLOAD,
    concurrency: int = 16,
    processes: int = 1,
    rate: float | None = None,
    max_attempts: int = 5,
    timeout: float = 30.0,
    headers: Headers = (),
    ledger: str | os.PathLike[str] | None = None,
    retry_failed: RetryFailed | str | bool = RetryFailed.NONE,
    retry_unsafe: bool = False,
    max_outage: float = 300.0,
    state: str | os.PathLike[str] | None = None,
    full: bool = False,
    keep_ledgers: int = 7,
    only_changed: bool = False,
    shard: tuple[int, int] | str | None = None,
    limit: int | None = None,
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    token_url: str | None = None,
    grace: float = 8.0,
    transform: Transform | None = None,
    on_result: Callable[[RowResult], None] | None = None,
    transport: Transport | None = None,
) -> RunResult:
    """Send one request per row and return what the run did; see the module docstring.

    ``rows`` given in code need ``ledger=`` (a path, or ``os.devnull`` to keep none). Errors that
    stop a run raise (``ConfigError``, ``CredentialsRejected``, ``ApiUnreachable``…); rows that
    fail are outcomes, not exceptions. With ``options=``, the other run options stay unset.
    """
    named: dict[str, Any] = {
        "base_url": base_url,
        "format": format,
        "path": path,
        "method": method,
        "schema": schema,
        "concurrency": concurrency,
        "processes": processes,
        "rate": rate,
        "max_attempts": max_attempts,
        "timeout": timeout,
        "headers": headers,
        "ledger": os.fspath(ledger) if ledger is not None else None,
        "retry_failed": retry_failed,
        "retry_unsafe": retry_unsafe,
        "max_outage": max_outage,
        "state": os.fspath(state) if state is not None else None,
        "full": full,
        "keep_ledgers": keep_ledgers,
        "only_changed": only_changed,
        "shard": shard,
        "limit": limit,
        "token": token,
        "client_id": client_id,
        "client_secret": client_secret,
        "token_url": token_url,
        "grace": grace,
    }
    in_code: Iterable[Any] | AsyncIterable[Any] | None = None
    if isinstance(rows, (str, os.PathLike)):
        source = os.fspath(rows)
    else:
        source, in_code = "<rows>", rows
    opts = _options(source, options, named)
    if in_code is not None and not opts.ledger:
        raise ConfigError("rows given in code need ledger=PATH to record and resume the run (or os.devnull)")
    run = Run(opts, transport=transport, rows=in_code, transform=transform, on_result=on_result)
    return await run.execute()


def _options(source: str, options: RunOptions | None, named: dict[str, Any]) -> RunOptions:
    if options is None:
        return RunOptions(input=source, **named)
    # The signature's own defaults: a keyword left at its default counts as not given.
    defaults = run_async.__kwdefaults__ or {}
    changed = sorted(name for name, value in named.items() if value != defaults.get(name))
    if changed:
        raise ConfigError(f"give options=RunOptions(...) or keyword options, not both ({', '.join(changed)})")
    return dataclasses.replace(options, input=source)


run = blocking(run_async)
