"""What a run would change: each row's body, field by field, against the live workload.

Rows are mapped exactly as ``run`` maps them (same ``Mapper``, same body), then looked up in
batches of up to 100 ids (``workload_id=or(...)``, one GET each, a few in flight). ``attributes``
is compared key by key, only the keys a row sets: bulkpatch treats a PATCH of ``attributes`` as
a merge, as the mock does (the API does not document merge or replace). Other fields compare
whole; ``allowed_actions`` in order. Numbers compare by value, ``true`` is not ``1``.

A row whose id came earlier in the input is always sent: its effect depends on the rows before
it (a Bloom filter remembers the ids in constant memory; a false positive sends a row more).
The before-values of the fields that change go to the snapshot, in the input's format: running
it restores them. Values the snapshot cannot restore are counted: a key that did not exist
(a PATCH cannot remove it) or, in CSV, a value no cell carries back (say a number).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bulkpatch.auth import Auth
from bulkpatch.columns import ANNOTATION_COLUMNS
from bulkpatch.errors import ConfigError
from bulkpatch.export import ID, LeftOut, Output, RowWriter
from bulkpatch.live import MAX_IDS, Include, LiveReader
from bulkpatch.mapping import DEFAULT_PATH, Rejected, Request
from bulkpatch.options import RunOptions
from bulkpatch.reader import Format, detect_format
from bulkpatch.schema import Schema
from bulkpatch.transport import Transport
from bulkpatch.wiring import open_input

#: the mask's values, one byte per input row; anything but UNCHANGED is sent
UNCHANGED = 0
CHANGES = 1
NOT_FOUND = 2
#: the id came on an earlier row
REPEATED = 3
#: invalid or skipped: ``run`` records it as it always does
NOT_PLANNED = 4
#: lookups in flight at most
WINDOW = 8
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "(absent)"})()


@dataclass(frozen=True, slots=True)
class Diff:
    """One field a row would change: ``name`` or ``attributes.KEY``."""

    field: str
    before: Any
    after: Any


@dataclass(slots=True)
class Compared:
    """One input row against its live workload."""

    row: int
    key: str
    #: what ``run`` would send, or None for a row it would not send (``rejected`` says why)
    body: dict[str, Any] | None
    #: the live workload, or None when not found (or not looked up)
    live: dict[str, Any] | None = None
    diffs: list[Diff] = field(default_factory=list)
    repeated: bool = False
    rejected: Rejected | None = None


def same(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0``, but ``true`` is no number and ``"1"`` no ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def diff(body: dict[str, Any], live: dict[str, Any]) -> list[Diff]:
    """The fields of ``body`` whose value differs from ``live``'s (attributes key by key)."""
    out = []
    for name, after in body.items():
        if name == "attributes" and isinstance(after, dict):
            attributes = live.get("attributes")
            current = attributes if isinstance(attributes, dict) else {}
            for key, value in after.items():
                before = current.get(key, MISSING)
                if not same(before, value):
                    out.append(Diff(f"attributes.{key}", before, value))
        else:
            before = live.get(name, MISSING)
            if not same(before, after):
                out.append(Diff(name, before, after))
    return out


def check_plannable(options: RunOptions) -> None:
    """Plans compare workload fields: the default path, PATCH and the workload schema only."""
    if options.path != DEFAULT_PATH or options.method != "PATCH" or options.schema is not Schema.WORKLOAD:
        raise ConfigError(
            "plan and verify compare workloads: they need the default --path, --method PATCH"
            " and --schema workload"
        )


class SeenIds:
    """A Bloom filter of ids (8 MiB, 3 hashes): under 1% false positives at 5M ids."""

    BITS = 1 << 26

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)

    def check_and_add(self, key: str) -> bool:
        digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=12).digest()
        seen = True
        for at in (0, 4, 8):
            bit = int.from_bytes(digest[at : at + 4], "little") % self.BITS
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not self._bits[byte] & mask:
                seen = False
                self._bits[byte] |= mask
        return seen


async def compare_rows(
    options: RunOptions, reader: LiveReader, *, header: list[str] | None = None
) -> AsyncIterator[Compared]:
    """Every input row, in order, compared with its live workload (looked up a batch at a time).

    ``header`` (a list) receives the CSV input's header, for a snapshot in the same format.
    """
    check_plannable(options)
    source, mapper, records = open_input(options)
    if header is not None and source.header is not None:
        header.extend(source.header)
    seen = SeenIds()
    pending: deque[tuple[list[Compared], asyncio.Future[dict[str, dict[str, Any]]]]] = deque()
    try:
        for batch in _batches(mapper.map(r) for r in records if r is not None):
            for row in batch:
                if row.body is not None:
                    row.repeated = seen.check_and_add(row.key)
            ids = [row.key for row in batch if row.body is not None]
            pending.append((batch, asyncio.ensure_future(reader.lookup(ids, _include(batch)))))
            if len(pending) >= WINDOW:
                for row in await _settle(*pending.popleft()):
                    yield row
        while pending:
            for row in await _settle(*pending.popleft()):
                yield row
    finally:
        for _, task in pending:
            task.cancel()
        source.close()


def _batches(mapped: Iterator[Request | Rejected]) -> Iterator[list[Compared]]:
    batch: list[Compared] = []
    ids: set[str] = set()
    for item in mapped:
        if isinstance(item, Rejected):
            batch.append(Compared(item.row, item.key, None, rejected=item))
            continue
        body = orjson.loads(item.body) if item.body else {}
        if item.key not in ids and len(ids) >= MAX_IDS:
            yield batch
            batch, ids = [], set()
        ids.add(item.key)
        batch.append(Compared(item.row, item.key, body))
    if batch:
        yield batch


def _include(batch: list[Compared]) -> Include:
    keys: dict[str, None] = {}
    actions = False
    for row in batch:
        if row.body is not None:
            attributes = row.body.get("attributes")
            if isinstance(attributes, dict):
                keys.update(dict.fromkeys(attributes))
            actions = actions or "allowed_actions" in row.body
    return Include(attributes=tuple(keys), allowed_actions=actions)


async def _settle(batch: list[Compared], lookup: asyncio.Future[dict[str, dict[str, Any]]]) -> list[Compared]:
    found = await lookup
    for row in batch:
        if row.body is not None:
            row.live = found.get(row.key)
            if row.live is not None:
                row.diffs = diff(row.body, row.live)
    return batch


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
    examples: int = 5,
) -> PlanResult:
    """Compare every row of ``options.input`` with the live workloads; write the rollback."""
    check_plannable(options)
    reader = LiveReader.for_options(options, transport, auth=auth, notice=notice)
    result = PlanResult(snapshot=snapshot)
    input_format = detect_format(options.input, options.format)
    snapshot_format = _snapshot_format(snapshot, input_format) if snapshot else input_format
    header: list[str] = []
    with Output(snapshot) if snapshot else _NoOutput() as out:
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
