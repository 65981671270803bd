"""The commands around a run as library calls: ``plan``, ``verify``, ``export`` and their
``_async`` twins.

Each reads the live workloads (one GET per 100 input rows, or one per listed page) with the
connection options of ``run`` and returns the typed result the CLI prints: ``PlanResult``,
``VerifyResult``, ``ExportResult``. Like ``run``, they read no environment variables; warnings
(a shrunk page size, say) go to ``notice`` and progress counts to ``on_progress``.

>>> found = bulkpatch.plan(                                             # doctest: +SKIP
...     "site.csv", base_url="https://eu2-cloud.acronis.com", token="...", snapshot="site.before.csv"
... )
>>> found.to_change, found.unchanged, found.snapshot_rows
(12, 88, 12)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence

from bulkpatch.api import blocking
from bulkpatch.engine.assembly import transport_for
from bulkpatch.errors import ConfigError
from bulkpatch.http.transport import Transport
from bulkpatch.ops.export import ExportResult, export_workloads, parse_columns
from bulkpatch.ops.live import READ_LIMIT, LiveReader, list_filters
from bulkpatch.ops.output import Output
from bulkpatch.ops.plan import PlanResult, plan_rows
from bulkpatch.ops.verify import VerifyResult, verify_rows
from bulkpatch.option_values import Headers, parse_headers
from bulkpatch.options import RunOptions
from bulkpatch.rows.reader import detect_format

Notice = Callable[[str], None] | None
OnProgress = Callable[[int], None] | None


async def plan_async(
    input: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    snapshot: str | os.PathLike[str] | None = None,
    overwrite_snapshot: bool = False,
    format: str | None = None,
    headers: Headers = (),
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    token_url: str | None = None,
    timeout: float = 30.0,
    max_attempts: int = 5,
    transport: Transport | None = None,
    notice: Notice = None,
    on_progress: OnProgress = None,
) -> PlanResult:
    """What ``run(input)`` would change, row by row; the rollback goes to ``snapshot`` if given.

    An existing snapshot is not replaced unless ``overwrite_snapshot``: a plan made after the run
    would otherwise overwrite the rollback with an empty one.
    """
    options = RunOptions(
        input=os.fspath(input),
        format=format,
        base_url=base_url,
        headers=parse_headers(headers),
        token=token,
        client_id=client_id,
        client_secret=client_secret,
        token_url=token_url,
        timeout=timeout,
        max_attempts=max_attempts,
        ledger=os.devnull,
    )
    where = os.fspath(snapshot) if snapshot is not None else None
    if where == "-":
        raise ConfigError("--snapshot needs a file name: the plan itself goes to stdout")
    if where and not overwrite_snapshot:
        _keep(where)
    async with _reading(options, transport) as through:
        return await plan_rows(
            options, through, snapshot=where, notice=notice, on_progress=on_progress, body_limit=READ_LIMIT
        )


async def verify_async(
    input: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    format: str | None = None,
    headers: Headers = (),
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    token_url: str | None = None,
    timeout: float = 30.0,
    max_attempts: int = 5,
    transport: Transport | None = None,
    notice: Notice = None,
    on_progress: OnProgress = None,
) -> VerifyResult:
    """Whether the live workloads carry ``input``'s values (after a run); see ``exit_code``."""
    options = RunOptions(
        input=os.fspath(input),
        format=format,
        base_url=base_url,
        headers=parse_headers(headers),
        token=token,
        client_id=client_id,
        client_secret=client_secret,
        token_url=token_url,
        timeout=timeout,
        max_attempts=max_attempts,
        ledger=os.devnull,
    )
    return await read_back(options, transport=transport, notice=notice, on_progress=on_progress)


async def read_back(
    options: RunOptions,
    *,
    transport: Transport | None = None,
    notice: Notice = None,
    on_progress: OnProgress = None,
    only: Callable[[int], bool] | None = None,
) -> VerifyResult:
    """``verify`` for the options of a run (``bulkpatch run --verify``); ``only`` picks rows by
    number (``--limit N --verify``: this run's)."""
    async with _reading(options, transport) as through:
        return await verify_rows(options, through, notice=notice, on_progress=on_progress, only=only)


async def export_async(
    output: str | os.PathLike[str],
    *,
    base_url: str | None = None,
    format: str | None = None,
    columns: str | Sequence[str] | None = None,
    types: Sequence[str] = (),
    tenant_id: str | None = None,
    workload_ids: Sequence[str] = (),
    updated_since: str | None = None,
    page_size: int = 100,
    headers: Headers = (),
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    token_url: str | None = None,
    timeout: float = 30.0,
    max_attempts: int = 5,
    transport: Transport | None = None,
    notice: Notice = None,
    on_progress: OnProgress = None,
) -> ExportResult:
    """List workloads into ``output`` (CSV or JSONL, ``.gz`` too; ``-`` is stdout), a file that
    ``run`` reads back to the same values: edit it, then run it.

    ``columns`` are the fields after ``workload_id`` (``"name,attributes.site"`` or a list);
    None picks name, enabled, allowed_actions and the first page's attribute keys (CSV).
    """
    path = os.fspath(output)
    if path == "-" and not format:
        raise ConfigError("writing to stdout needs --format csv or --format jsonl")
    chosen = detect_format(path, format)
    picked = None
    if columns is not None:
        picked = parse_columns(columns if isinstance(columns, str) else ",".join(columns))
    filters = list_filters(types, tenant_id, workload_ids, updated_since)
    options = RunOptions(
        input="<export>",
        method="GET",
        base_url=base_url,
        headers=parse_headers(headers),
        token=token,
        client_id=client_id,
        client_secret=client_secret,
        token_url=token_url,
        timeout=timeout,
        max_attempts=max_attempts,
        ledger=os.devnull,
    )
    async with _reading(options, transport) as through:
        reader = LiveReader.for_options(
            options, through, notice=notice, page_size=page_size, body_limit=READ_LIMIT
        )
        with Output(path, option="--output") as out:
            return await export_workloads(
                reader, out, fmt=chosen, columns=picked, filters=filters, on_progress=on_progress
            )


def _keep(snapshot: str) -> None:
    if os.path.exists(snapshot):
        raise ConfigError(
            f"{snapshot} exists (the rollback of an earlier plan?); move it away, or pass"
            " --overwrite-snapshot or --snapshot FILE"
        )


@contextlib.asynccontextmanager
async def _reading(options: RunOptions, transport: Transport | None) -> AsyncIterator[Transport]:
    """The transport given (left open), or one of our own, closed after."""
    if transport is not None:
        yield transport
        return
    own = transport_for(options, body_limit=READ_LIMIT)
    try:
        yield own
    finally:
        await own.close()


plan = blocking(plan_async)
verify = blocking(verify_async)
export = blocking(export_async)
