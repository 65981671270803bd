"""After a run: do the live workloads carry what the input says? Exit 1 on drift.

The rows are mapped and read back exactly as ``plan`` does (one GET per 100 rows), and a row
drifts when a field it sets differs live (``attributes`` key by key) or its workload is gone.
Rows ``run`` would not send (invalid, skipped) are counted apart and are no drift. When one id
comes on several rows, a field that a later row set again shows on the earlier row as drift: the
rows are read one by one, not merged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bulkpatch.http.auth import Auth
from bulkpatch.http.transport import Transport
from bulkpatch.ops.compare import Diff, compare_rows
from bulkpatch.ops.live import READ_LIMIT, LiveReader
from bulkpatch.options import RunOptions


@dataclass
class VerifyResult:
    """How the live workloads compare with the input."""

    rows: int = 0
    matching: int = 0
    drifted: int = 0
    not_found: int = 0
    #: rows ``run`` would not send (invalid, skipped): nothing to compare
    not_checked: int = 0
    #: the first differences: (row, id, diff) where ``before`` is the live value, ``after`` the input's
    examples: list[tuple[int, str, Diff]] = field(default_factory=list)
    #: the first ids not found
    missing: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def exit_code(self) -> int:
        """1 when some row drifted or its workload is gone, else 0."""
        return 1 if self.drifted or self.not_found else 0


async def verify_rows(
    options: RunOptions,
    transport: Transport,
    *,
    auth: Auth | None = None,
    notice: Callable[[str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    body_limit: int = READ_LIMIT,
    examples: int = 10,
    only: Callable[[int], bool] | None = None,
) -> VerifyResult:
    """Read back every row of ``options.input`` (or those ``only`` picks by row number) and
    compare it with the live workload."""
    reader = LiveReader.for_options(options, transport, auth=auth, notice=notice, body_limit=body_limit)
    result = VerifyResult()
    async for row in compare_rows(options, reader, only=only):
        result.rows += 1
        if row.body is None:
            result.not_checked += 1
        elif row.live is None:
            result.not_found += 1
            if len(result.missing) < examples:
                result.missing.append(row.key)
        elif row.diffs:
            result.drifted += 1
            for d in row.diffs[: max(0, examples - len(result.examples))]:
                result.examples.append((row.row, row.key, d))
        else:
            result.matching += 1
        if on_progress is not None and result.rows % 1000 == 0:
            on_progress(result.rows)
    result.requests = reader.requests
    return result
