"""Writing workloads as rows that ``bulkpatch run`` reads back to the very same values.

``export`` writes the live workloads this way, and ``plan`` writes its rollback snapshot (the
before-values) the same way, so both files are ``run`` inputs. The one rule: an unedited file
changes nothing. JSON Lines holds every value exactly. A CSV cell is text, and under the
workload schema ``run`` reads ``enabled`` as true/false, ``allowed_actions`` and ``attributes``
(the whole object, one column) as JSON, and every other cell — ``name``, ``client_id``,
``attributes.KEY`` — as a string. A value that no cell text maps back to (an attribute that is a
number or null, say) is left empty, since an empty cell leaves the field as it is, and counted,
so that the user learns to pick JSONL or the ``attributes`` column for it.

Streamed: CSV needs its header first, so its columns come from ``--columns`` or from the first
page; attribute keys first seen later are left out and counted (JSONL keeps them all).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from bulkpatch.errors import ConfigError
from bulkpatch.ops.live import Include, LiveReader
from bulkpatch.rows.reader import Format

ID = "workload_id"
#: the workload fields a column may name (``attributes.KEY`` besides)
FIELDS = ("name", "enabled", "allowed_actions", "client_id", "attributes")
#: the columns when none are asked for; ``client_id`` is left out because a PATCH carrying
#: another application's client id may be refused, and nobody edits it
DEFAULT_FIELDS = ("name", "enabled", "allowed_actions")
#: JSONL's default: the same, with the whole attributes object (JSON keeps every value exact)
JSONL_FIELDS = (*DEFAULT_FIELDS, "attributes")
_MISSING = object()
#: distinct names a counter of left-out keys keeps (the rest are counted together)
_NAMES_KEPT = 100


def parse_columns(text: str) -> list[str]:
    """``name,attributes.site`` → the columns after ``workload_id``; ``ConfigError`` names a bad one."""
    columns = [c.strip() for c in text.split(",") if c.strip() and c.strip() != ID]
    for column in columns:
        head, dot, key = column.partition(".")
        if head not in FIELDS or (dot and (head != "attributes" or not key_fits_csv(key))):
            raise ConfigError(
                f"--columns {column!r} is not a workload field (allowed: {', '.join(FIELDS)}, attributes.KEY)"
            )
    if len(set(columns)) != len(columns):
        raise ConfigError("--columns names a column twice")
    if "attributes" in columns and any(c.startswith("attributes.") for c in columns):
        raise ConfigError("--columns: 'attributes' (the whole object) and 'attributes.KEY' overlap; keep one")
    return columns


def key_fits_csv(key: str) -> bool:
    """Whether ``attributes.KEY`` reads back as this one key: a dot would nest, a colon type it."""
    return bool(key) and "." not in key and ":" not in key


def include_for(columns: Sequence[str] | None) -> Include:
    """The include flags a listing needs to fill ``columns`` (None: every field)."""
    if columns is None:
        return Include()
    keys = tuple(c.partition(".")[2] for c in columns if c.startswith("attributes."))
    attributes: bool | tuple[str, ...] = True if "attributes" in columns else keys
    return Include(attributes=attributes, allowed_actions="allowed_actions" in columns)


def value_at(source: dict[str, Any], column: str) -> Any:
    """The value a column holds in a workload (or a body of the same shape), or ``_MISSING``."""
    head, dot, key = column.partition(".")
    value = source.get(head, _MISSING)
    if dot:
        value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
    return value


def cell_for(column: str, value: Any) -> str | None:
    """The CSV text that ``run`` reads back as exactly ``value``, or None when there is none."""
    if column == "enabled":
        return ("true" if value else "false") if isinstance(value, bool) else None
    if column == "allowed_actions":
        ok = isinstance(value, list) and all(isinstance(a, str) for a in value)
        return orjson.dumps(value).decode() if ok else None
    if column == "attributes":
        return orjson.dumps(value).decode() if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def _fits_field(column: str, value: Any) -> bool:
    """Whether a JSONL field holds a value the workload schema takes for it."""
    if column in ("name", "client_id"):
        return isinstance(value, str)
    if column == "enabled":
        return isinstance(value, bool)
    if column == "attributes":
        return isinstance(value, dict)
    if column == "allowed_actions":
        return isinstance(value, list) and all(isinstance(a, str) for a in value)
    return column.startswith("attributes.")


@dataclass
class LeftOut:
    """Counts of values left out, by column (a bounded number of names)."""

    by_column: Counter[str] = field(default_factory=Counter)
    others: int = 0

    def add(self, column: str) -> None:
        if column in self.by_column or len(self.by_column) < _NAMES_KEPT:
            self.by_column[column] += 1
        else:
            self.others += 1

    def total(self) -> int:
        return self.others + sum(self.by_column.values())

    def describe(self, limit: int = 8) -> str:
        shown = ", ".join(f"{name} ({n:,})" for name, n in self.by_column.most_common(limit))
        rest = self.total() - sum(n for _, n in self.by_column.most_common(limit))
        return shown + (f" and {rest:,} more" if rest else "")


class RowWriter:
    """Writes ``workload_id`` plus ``columns`` per row, in CSV or JSONL, as ``run`` reads them."""

    def __init__(self, out: IO[bytes], fmt: Format, columns: Sequence[str] | None) -> None:
        self.format = fmt
        self.columns = list(columns) if columns is not None else None
        #: values that no cell could carry back (left empty in CSV, left out in JSONL)
        self.lost = LeftOut()
        self.rows = 0
        self._out = out
        self._csv: Any = None
        if fmt is Format.CSV:
            if self.columns is None:
                raise ValueError("CSV needs its columns up front")
            self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
            self._csv = csv.writer(self._text, lineterminator="\n")
            self._csv.writerow([ID, *self.columns])

    def write(self, workload_id: str, source: dict[str, Any]) -> None:
        """One row: the values of ``source`` (a workload, or a body of the same shape)."""
        self.rows += 1
        if self._csv is not None:
            assert self.columns is not None
            cells = [workload_id]
            for column in self.columns:
                value = value_at(source, column)
                text = None if value is _MISSING else cell_for(column, value)
                if text is None and value is not _MISSING:
                    self.lost.add(column)
                cells.append(text or "")
            self._csv.writerow(cells)
            return
        record: dict[str, Any] = {ID: workload_id}
        for column in self.columns if self.columns is not None else FIELDS:
            value = value_at(source, column)
            if value is _MISSING:
                continue
            if not _fits_field(column, value):
                self.lost.add(column)
                continue
            head, dot, key = column.partition(".")
            if dot:
                record.setdefault(head, {})[key] = value
            else:
                record[head] = value
        self._out.write(orjson.dumps(record) + b"\n")

    def flush(self) -> None:
        if self._csv is not None:
            self._text.flush()
            self._text.detach()
            self._csv = None


def csv_columns(first_page: Iterable[dict[str, Any]]) -> list[str]:
    """The default CSV columns: the default fields, then every attribute key of the first page."""
    keys: dict[str, None] = {}
    for item in first_page:
        attributes = item.get("attributes")
        if isinstance(attributes, dict):
            keys.update(dict.fromkeys(k for k in attributes if key_fits_csv(k)))
    return [*DEFAULT_FIELDS, *(f"attributes.{k}" for k in sorted(keys))]


@dataclass
class ExportResult:
    """What an export wrote."""

    written: int
    columns: list[str] | None
    #: values that no cell could carry back (CSV) or the schema would refuse (JSONL)
    lost: LeftOut
    #: attribute keys left out of a CSV because the header was written before they were seen
    unseen_keys: LeftOut
    requests: int


async def export_workloads(
    reader: LiveReader,
    out: IO[bytes],
    *,
    fmt: Format,
    columns: Sequence[str] | None = None,
    filters: Sequence[tuple[str, str]] = (),
    on_progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """List every workload matching ``filters`` and write it to ``out``, one page at a time."""
    writer: RowWriter | None = None
    unseen = LeftOut()
    header: set[str] = set()
    pick_csv_columns = fmt is Format.CSV and columns is None
    if fmt is Format.JSONL and columns is None:
        columns = JSONL_FIELDS
    async for page in reader.pages(filters, include_for(columns)):
        if writer is None:
            chosen = csv_columns(page) if pick_csv_columns else columns
            writer = RowWriter(out, fmt, chosen)
            header = set(chosen or ())
        for item in page:
            writer.write(str(item.get("id", "")), item)
            if pick_csv_columns:
                _count_unseen(item, header, unseen)
        if on_progress is not None:
            on_progress(writer.rows)
    if writer is None:  # nothing listed: still a valid (empty) run input
        writer = RowWriter(
            out, fmt, columns if columns is not None or fmt is Format.JSONL else DEFAULT_FIELDS
        )
    writer.flush()
    return ExportResult(writer.rows, writer.columns, writer.lost, unseen, reader.requests)


def _count_unseen(item: dict[str, Any], header: set[str], unseen: LeftOut) -> None:
    attributes = item.get("attributes")
    if isinstance(attributes, dict):
        for key in attributes:
            if f"attributes.{key}" not in header:
                unseen.add(f"attributes.{key}")
