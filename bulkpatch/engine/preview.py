"""A dry run: read, map and validate every row, show a sample of the requests, send nothing.

With ``--only-changed`` it reads the live workloads first, as the run would, and counts the rows
already equal as ``unchanged``: what it shows is what the run would send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bulkpatch.engine.assembly import Transform, auth_for, open_input, redactor_for, transport_for
from bulkpatch.http.auth import Auth
from bulkpatch.http.transport import Transport
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.stats import Tally
from bulkpatch.rows.mapping import Rejected, Request


@dataclass
class DryRunResult:
    """What a dry run found: counts, and the first few requests it would send."""

    tally: Tally
    samples: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def dry_run(
    options: RunOptions,
    *,
    samples: int = 5,
    rows: Iterable[Any] | AsyncIterable[Any] | None = None,
    transform: Transform | None = None,
) -> DryRunResult:
    """Read, map and validate every row; send nothing, write no ledger."""
    if rows is not None and not isinstance(rows, Iterable):
        raise TypeError("a dry run reads rows given in code from a plain iterable, not an async one")
    unchanged = asyncio.run(live_unchanged(options)) if options.only_changed else None
    source, mapper, records = open_input(options, rows, transform)
    result = DryRunResult(Tally())
    base = (options.base_url or "").rstrip("/")
    try:
        for record in records:
            if record is None:
                continue
            mapped = mapper.map(record)
            if isinstance(mapped, Request):
                if unchanged is not None and unchanged(mapped.row):
                    result.tally.by_status[Status.UNCHANGED] += 1
                    continue
                result.tally.by_status[Status.OK] += 1
                if len(result.samples) < samples:
                    result.samples.append((options.method, base + mapped.path, mapped.body))
            else:
                status = Status(mapped.status)
                result.tally.add(
                    RowResult(mapped.row, mapped.line, mapped.key, status, None, 0, mapped.reason)
                )
                if len(result.rejected) < samples:
                    result.rejected.append(mapped)
    finally:
        source.close()
    return result


async def live_unchanged(
    options: RunOptions,
    transport: Transport | None = None,
    *,
    auth: Auth | None = None,
    notice: Callable[[str], None] | None = None,
) -> Callable[[int], bool]:
    """``--only-changed``: which rows the live workloads already hold (read, never written),
    through ``transport`` or a reader of our own that keeps whole pages, as ``plan`` does."""
    from bulkpatch.ops.live import READ_LIMIT
    from bulkpatch.ops.plan import plan_rows

    async with contextlib.AsyncExitStack() as stack:
        through: Transport
        if transport is not None:
            through = transport
        else:
            through = await stack.enter_async_context(transport_for(options, body_limit=READ_LIMIT))
        if auth is None:
            auth = auth_for(options, through, redactor_for(options))
        planned = await plan_rows(options, through, auth=auth, notice=notice)
    if notice is not None:
        notice(
            f"planned against the live workloads: {planned.to_change:,} rows to change,"
            f" {planned.unchanged:,} already equal, {planned.not_found:,} not found"
        )
    return lambda row: not planned.should_send(row)
