"""Reading ledgers: which record of each row counts, over one run or a chain of fix-up runs.

Within one ledger the latest record of each row wins. Over several ledgers given in order (the
first run, then the run of its fix file, ...) a later ledger's outcome replaces an earlier
one's for the same key, and for the row it was fixed from: ``report --failed-out`` writes each
row's number in ``_row``, so a row whose id was corrected (a 404) still replaces its original.
Records are read by ``RowResult.from_json``, which skips a hand-edited or garbled line (an
unknown status, ``"attempts": "x"``) like a torn one. A row number far beyond what the records
read so far reach (10^12, say) counts, but in a dict, so memory stays bounded by the number of
records.
"""

from __future__ import annotations

import csv
import os
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from bulkpatch.errors import BulkPatchError, ConfigError
from bulkpatch.records.ledger import RowResult, iter_records
from bulkpatch.records.ledger_file import file_sha256
from bulkpatch.rows.columns import ANNOTATION_KEY
from bulkpatch.rows.reader import InputFile

LedgerPath = str | os.PathLike[str]
# Row numbers grow with the records of a real ledger; one far beyond them goes to a dict instead
# of stretching the dense table (``row`` 10^12 would otherwise ask for 4 TB).
_DENSE_SLACK = 1 << 16


def latest(ledgers: Sequence[LedgerPath]) -> Iterator[tuple[int, RowResult]]:
    """Yield ``(position of its ledger, record)`` for each record that counts, last ledger first.

    A record counts when it is its row's latest in its ledger and no later ledger has a record
    of the same key or of a row fixed from it. Other records without a key (unreadable input
    records) always count.
    """
    ledgers = distinct(ledgers)
    for ledger in ledgers:
        if not os.path.isfile(ledger):
            raise ConfigError(f"no ledger at {str(ledger)!r}")
    # Only what the later ledgers name is kept (the fix-up runs: usually few rows).
    later_keys: set[str] = set()
    fixed_rows: set[int] = set()  # rows of the ledger at hand that the next one fixed
    for position in range(len(ledgers) - 1, -1, -1):
        keys_here: set[str] = set()
        fixed_from = fix_origins(ledgers[position]) if position else {}
        fixed_before: set[int] = set()
        for result in _latest_per_row(ledgers[position]):
            key = result.key
            # A replaced record still replaces, in turn, what it was fixed from.
            if position:
                if key:
                    keys_here.add(key)
                origin = fixed_from.get(result.row)
                if origin is not None:
                    fixed_before.add(origin)
            if result.row in fixed_rows or (key and key in later_keys):
                continue
            yield position, result
        later_keys |= keys_here
        fixed_rows = fixed_before


def fix_origins(ledger: LedgerPath) -> dict[int, int]:
    """``{row: row it was fixed from}`` for the input of ``ledger``, when that input is a file
    written by ``report --failed-out`` (its ``_row`` annotations); else, or when the input is
    gone, nothing."""
    try:
        name, fmt = source_of(ledger, None)
        with InputFile(name, fmt, keep_raw=True) as source:
            if source.header is not None and "_row" not in source.header:
                return {}
            origins: dict[int, int] = {}
            for record in source:
                fields = record.fields or {}
                note = fields.get(ANNOTATION_KEY)
                origin = fields.get("_row") if source.header is not None else None
                if source.header is not None and record.fields is None and record.raw:
                    # A record of the wrong width still ends with the _row that report wrote.
                    origin = next(csv.reader([record.raw]), [""])[-1]
                if isinstance(note, dict):
                    origin = note.get("row")
                elif source.header is None and record.fields is not None and not origins:
                    return {}  # JSONL whose first record has no annotation: not a fix file
                if isinstance(origin, str) and origin.isascii() and origin.isdigit():
                    origin = int(origin)
                if type(origin) is int and origin > 0:
                    origins[record.row] = origin
            return origins
    except BulkPatchError:
        return {}


def parse_row(data: dict[str, Any]) -> RowResult | None:
    """A row record as a ``RowResult``, or None when any field is not what the writer writes."""
    return RowResult.from_json(data)


def _latest_per_row(ledger: LedgerPath) -> Iterator[RowResult]:
    """Yield the latest record of each row, in ledger order. Two passes: the first finds which
    record is each row's latest (four bytes per row), the second yields just those."""
    dense = array("I")
    sparse: dict[int, int] = {}
    for ordinal, result in enumerate(_rows(ledger), start=1):
        row = result.row
        if row >= len(dense) and row <= 2 * ordinal + _DENSE_SLACK:
            dense.extend(bytes(4 * max(row + 1 - len(dense), len(dense) // 2, 1024)))
        if row < len(dense):
            dense[row] = ordinal
            if sparse:
                sparse.pop(row, None)
        else:
            sparse[row] = ordinal
    for ordinal, result in enumerate(_rows(ledger), start=1):
        row = result.row
        wins = sparse.get(row) if row >= len(dense) else dense[row]
        if wins == ordinal:
            yield result


def _rows(ledger: LedgerPath) -> Iterator[RowResult]:
    for data in iter_records(ledger):
        result = parse_row(data)
        if result is not None:
            yield result


def distinct(ledgers: Sequence[LedgerPath]) -> list[LedgerPath]:
    """The ledgers in order, each once (at its last place): a ledger given twice counts once."""
    out: list[LedgerPath] = []
    seen: set[str] = set()
    for ledger in reversed(ledgers):
        real = os.path.realpath(ledger)
        if real not in seen:
            seen.add(real)
            out.append(ledger)
    out.reverse()
    return out


def source_of(ledger: LedgerPath, input_path: str | None = None) -> tuple[str, str | None]:
    """The input file of ``ledger`` and its format (None: go by the file's extension)."""
    header = next((data for data in iter_records(ledger) if data.get("type") == "header"), {})
    named = header.get("input")
    named_path = named.get("path") if isinstance(named, dict) else None
    name = input_path or named_path
    if not isinstance(name, str) or not name or name == "-":
        raise ConfigError(f"ledger {str(ledger)!r} does not name a readable input; pass --input FILE")
    _check_unchanged(ledger, name, named)
    fmt = header.get("format")
    if name != named_path or not isinstance(fmt, str):
        return name, None  # another file: go by its own extension
    return name, fmt


def _check_unchanged(ledger: LedgerPath, name: str, named: object) -> None:
    """Rows are copied by their number: from other content, they would be other rows."""
    recorded = named.get("sha256") if isinstance(named, dict) else None
    if not isinstance(recorded, str):
        return  # a pipe, or a ledger of an older bulkpatch: nothing to compare with
    if file_sha256(name) != recorded:
        raise ConfigError(
            f"{name} changed since ledger {str(ledger)!r} was written: its rows are not the ones the"
            " ledger numbers; pass --input with the file as it was (the run keeps no copy)"
        )
