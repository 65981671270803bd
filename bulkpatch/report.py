"""Summarise a ledger, and write out the input rows that still need attention.

Only the latest record of each row counts. Two passes keep memory at four bytes per row: the first
finds which record is each row's latest, the second tallies just those.
"""

from __future__ import annotations

import gzip
import os
from array import array
from typing import IO, Any

from bulkpatch.errors import ConfigError
from bulkpatch.ledger import RowResult, Status, iter_records
from bulkpatch.reader import Format, InputFile, csv_line
from bulkpatch.resume import LedgerIndex
from bulkpatch.stats import Tally


def summarise(ledger: str | os.PathLike[str]) -> Tally:
    """Tally the latest record of every row in ``ledger``."""
    _require(ledger)
    latest = array("I")
    for ordinal, data in enumerate(_row_records(ledger), start=1):
        row = data["row"]
        if row >= len(latest):
            latest.extend(bytes(4 * max(row + 1 - len(latest), len(latest) // 2, 1024)))
        latest[row] = ordinal
    tally = Tally()
    for ordinal, data in enumerate(_row_records(ledger), start=1):
        result = RowResult.from_json(data)
        if latest[data["row"]] == ordinal and result is not None:
            tally.add(result)
    return tally


def write_failed(ledger: str | os.PathLike[str], out: str, *, input_path: str | None = None) -> int:
    """Write the input rows whose latest status is failed or invalid to ``out``; return how many.

    The rows are copied as they stand in the input, in its own format (with the CSV header), so
    the file can be fixed and fed back to ``bulkpatch run``.
    """
    _require(ledger)
    index = LedgerIndex.load(ledger)
    header = index.header or {}
    source_name = input_path or (header.get("input") or {}).get("path")
    if not source_name or source_name == "-":
        raise ConfigError("the ledger does not name a readable input; pass --input FILE")
    wanted = {Status.FAILED, Status.INVALID}
    written = 0
    fmt = _format_of(source_name, header)
    with InputFile(source_name, fmt, keep_raw=True) as source, _open_out(out) as sink:
        if source.format is Format.CSV and source.header is not None:
            sink.write(csv_line(source.header) + "\n")
        for record in source:
            if index.get(record.row) in wanted and record.raw is not None:
                sink.write(record.raw + "\n")
                written += 1
    return written


def _row_records(ledger: str | os.PathLike[str]) -> Any:
    for data in iter_records(ledger):
        if data.get("type") == "row" and isinstance(data.get("row"), int) and data["row"] > 0:
            yield data


def _require(ledger: str | os.PathLike[str]) -> None:
    if not os.path.isfile(ledger):
        raise ConfigError(f"no ledger at {str(ledger)!r}")


def _format_of(name: str, header: dict[str, Any]) -> str | None:
    if name != (header.get("input") or {}).get("path"):
        return None  # another file: go by its own extension
    fmt = header.get("format")
    return fmt if isinstance(fmt, str) else None


def _open_out(out: str) -> IO[str]:
    try:
        if out.endswith(".gz"):
            return gzip.open(out, "wt", encoding="utf-8", errors="surrogateescape", newline="")
        return open(out, "w", encoding="utf-8", errors="surrogateescape", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot write {out!r}: {exc.strerror}") from None
