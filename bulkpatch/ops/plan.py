"""What a run would change, and the snapshot that undoes it.

Each row is compared with its live workload (``compare.py``) and gets one byte in a mask:
unchanged, changes, not found, repeated id, not planned (invalid or empty). ``run
--only-changed`` sends every row whose byte is not ``UNCHANGED``. The before-values of the fields
that change go to the snapshot, in the input's format (or JSONL when the snapshot's name says
so): running it restores them. Values a snapshot cannot restore are counted and reported: a key
that did not exist (a PATCH cannot remove it) or, in CSV, a value no cell carries back exactly
(a number in an attribute, say: a ``.jsonl`` snapshot keeps it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bulkpatch.errors import ConfigError
from bulkpatch.http.auth import Auth
from bulkpatch.http.transport import Transport
from bulkpatch.ops.compare import MISSING, Compared, Diff, compare_rows
from bulkpatch.ops.export import ID, LeftOut, RowWriter
from bulkpatch.ops.live import READ_LIMIT, LiveReader
from bulkpatch.ops.output import Output
from bulkpatch.options import RunOptions, check_plannable
from bulkpatch.rows.columns import ANNOTATION_COLUMNS
from bulkpatch.rows.reader import Format, detect_format

#: the mask's values, one byte per input row; anything but UNCHANGED is sent
UNCHANGED = 0
CHANGES = 1
NOT_FOUND = 2
#: the id came on an earlier row
REPEATED = 3
#: invalid or skipped: ``run`` records it as it always does
NOT_PLANNED = 4


@dataclass
class PlanResult:
    """What a run of the input would change; ``mask[row - 1]`` is the row's verdict."""

    #: one byte per input row: UNCHANGED, CHANGES, NOT_FOUND, REPEATED or NOT_PLANNED
    mask: bytearray = field(default_factory=bytearray)
    to_change: int = 0
    unchanged: int = 0
    not_found: int = 0
    repeated: int = 0
    not_planned: int = 0
    #: rows changing each field
    fields: Counter[str] = field(default_factory=Counter)
    #: the first changes: (row, id, diff)
    examples: list[tuple[int, str, Diff]] = field(default_factory=list)
    #: the first ids not found
    missing: list[str] = field(default_factory=list)
    snapshot: str | None = None
    snapshot_rows: int = 0
    #: before-values the snapshot cannot restore: keys that did not exist, cells CSV cannot carry
    irreversible: LeftOut = field(default_factory=LeftOut)
    requests: int = 0

    @property
    def rows(self) -> int:
        return len(self.mask)

    def should_send(self, row: int) -> bool:
        """Whether ``run --only-changed`` sends input row ``row`` (1-based)."""
        return row > len(self.mask) or self.mask[row - 1] != UNCHANGED


async def plan_rows(
    options: RunOptions,
    transport: Transport,
    *,
    auth: Auth | None = None,
    snapshot: str | None = None,
    notice: Callable[[str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    body_limit: int = READ_LIMIT,
    examples: int = 5,
) -> PlanResult:
    """Compare every row of ``options.input`` with the live workloads; write the rollback."""
    check_plannable(options)
    if snapshot == "-":
        raise ConfigError("--snapshot needs a file name: the plan itself goes to stdout")
    reader = LiveReader.for_options(options, transport, auth=auth, notice=notice, body_limit=body_limit)
    result = PlanResult(snapshot=snapshot)
    input_format = detect_format(options.input, options.format)
    snapshot_format = _snapshot_format(snapshot, input_format) if snapshot else input_format
    header: list[str] = []
    # Never over the input, its ledger, or another run's input: --overwrite-snapshot replaces
    # an earlier rollback only.
    protect = (options.input, options.ledger_path)
    output = Output(snapshot, option="--snapshot", protect=protect, run_inputs=False) if snapshot else None
    with output or _NoOutput() as out:
        writer: RowWriter | None = None
        async for row in compare_rows(options, reader, header=header):
            verdict = _verdict(row)
            result.mask.append(verdict)
            _count(result, verdict)
            if verdict == CHANGES:
                result.fields.update(d.field for d in row.diffs)
                for d in row.diffs[: max(0, examples - len(result.examples))]:
                    result.examples.append((row.row, row.key, d))
            elif verdict == NOT_FOUND and len(result.missing) < 10:
                result.missing.append(row.key)
            before = _before(row.diffs, result.irreversible) if row.diffs and snapshot else None
            if before:
                if writer is None:
                    writer = RowWriter(out, snapshot_format, _columns(header, snapshot_format))
                writer.write(row.key, before)
            if on_progress is not None and len(result.mask) % 1000 == 0:
                on_progress(len(result.mask))
        if snapshot and writer is None:  # nothing to change: an empty, valid run input
            writer = RowWriter(out, snapshot_format, _columns(header, snapshot_format))
        if writer is not None:
            writer.flush()
            result.snapshot_rows = writer.rows
            for name, count in writer.lost.by_column.items():
                result.irreversible.by_column[name] += count
    result.requests = reader.requests
    return result


def default_snapshot(input: str) -> str | None:
    """``site.csv`` → ``site.before.csv`` (``.gz`` dropped); None for stdin, which has no name."""
    if input == "-":
        return None
    stem = input[:-3] if input.endswith(".gz") else input
    base, dot, ext = stem.rpartition(".")
    return f"{base}.before.{ext}" if dot and "/" not in ext else f"{stem}.before"


def _count(result: PlanResult, verdict: int) -> None:
    if verdict == CHANGES:
        result.to_change += 1
    elif verdict == UNCHANGED:
        result.unchanged += 1
    elif verdict == NOT_FOUND:
        result.not_found += 1
    elif verdict == REPEATED:
        result.repeated += 1
    else:
        result.not_planned += 1


def _verdict(row: Compared) -> int:
    if row.body is None:
        return NOT_PLANNED
    if row.repeated:
        return REPEATED
    if row.live is None:
        return NOT_FOUND
    return CHANGES if row.diffs else UNCHANGED


def _before(diffs: list[Diff], irreversible: LeftOut) -> dict[str, Any]:
    """The live values of the changed fields, shaped as a body (``attributes`` nested)."""
    before: dict[str, Any] = {}
    for d in diffs:
        if d.before is MISSING:
            irreversible.add(d.field)
            continue
        head, dot, key = d.field.partition(".")
        if dot:
            before.setdefault(head, {})[key] = d.before
        else:
            before[head] = d.before
    return before


def _snapshot_format(path: str, input_format: Format) -> Format:
    try:
        chosen = detect_format(path)
    except ConfigError:
        return input_format
    if chosen is Format.CSV and input_format is Format.JSONL:
        raise ConfigError("--snapshot of a JSONL input must be JSONL (.jsonl): CSV columns are not known")
    return chosen


def _columns(header: list[str], fmt: Format) -> list[str] | None:
    if fmt is Format.JSONL:
        return None
    return [c for c in header if c != ID and c not in ANNOTATION_COLUMNS]


class _NoOutput:
    def __enter__(self) -> Any:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
