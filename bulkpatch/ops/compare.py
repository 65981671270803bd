"""Each input row against its live workload: the engine under ``plan`` and ``verify``.

Rows are mapped exactly as ``run`` maps them (same ``Mapper``, same body), then looked up in
batches of up to 100 ids (``workload_id=or(...)``, one GET each, a few in flight, answers taken
in input order). ``attributes`` is compared key by key, only the keys a row sets: bulkpatch
treats a PATCH of ``attributes`` as a merge, as the mock does (the API documents neither merge
nor replace). Other fields compare whole; ``allowed_actions`` in order. Numbers compare by
value; ``true`` is not ``1``, ``"1"`` is not ``1``.

A row whose id came on an earlier row is flagged ``repeated``: its effect depends on the rows
before it. A Bloom filter remembers the ids in constant memory (a false positive flags a row
that is not a repeat, which only costs sending it).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bulkpatch.engine.assembly import open_input
from bulkpatch.ops.live import MAX_IDS, Include, LiveReader
from bulkpatch.options import RunOptions, check_plannable
from bulkpatch.rows.mapping import Rejected, Request

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
    options: RunOptions,
    reader: LiveReader,
    *,
    header: list[str] | None = None,
    only: Callable[[int], bool] | None = None,
) -> AsyncIterator[Compared]:
    """Every input row, in order, compared with its live workload (looked up a batch at a time).

    ``header`` (a list) receives the CSV input's header, for a snapshot in the same format;
    ``only`` picks the rows to compare by row number (``run --limit N --verify``: this run's).
    """
    check_plannable(options)
    source, mapper, records = open_input(options)
    if header is not None and source.header is not None:
        header.extend(source.header)
    seen = SeenIds()
    pending: deque[tuple[list[Compared], asyncio.Future[dict[str, dict[str, Any]]]]] = deque()
    try:
        picked = (r for r in records if r is not None and (only is None or only(r.row)))
        for batch in _batches(mapper.map(r) for r in picked):
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
