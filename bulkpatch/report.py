"""Summarise ledgers: the latest outcome of every row, over one run or a chain of fix-up runs.

Within one ledger the latest record of each row wins. Over several ledgers given in order (the
first run, then the run of its ``fix.csv``, ...) the latest outcome of each key wins: a row
fixed by a later run no longer counts as failed. Records are read by a tolerant parser of its
own: a hand-edited or garbled line (a row number of 10^12, an unknown status, ``"attempts":
"x"``) is skipped like a torn line, and memory stays bounded by the number of records.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import math
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeGuard, cast

import orjson

from bulkpatch.columns import ANNOTATION_COLUMNS, ANNOTATION_KEY
from bulkpatch.errors import ConfigError
from bulkpatch.ledger import RowResult, Status, iter_records
from bulkpatch.reader import InputFile, csv_line
from bulkpatch.stats import Tally

LedgerPath = str | os.PathLike[str]
_STATUS_BY_VALUE = {s.value: s for s in Status}
# Row numbers grow with the records of a real ledger; one far beyond them goes to a dict instead
# of stretching the dense table (``row`` 10^12 would otherwise ask for 4 TB).
_DENSE_SLACK = 1 << 16


def summarise(*ledgers: LedgerPath) -> Tally:
    """Tally the outcome that counts for every row of ``ledgers`` (see the module's docstring)."""
    tally = Tally()
    for _, result in latest(ledgers):
        tally.add(result)
    return tally


def exit_status(tally: Tally) -> int:
    """``bulkpatch report``'s exit status: 1 while some row is still failed or invalid, else 0."""
    return 1 if tally.bad else 0


def latest(ledgers: Sequence[LedgerPath]) -> Iterator[tuple[int, RowResult]]:
    """Yield ``(position of its ledger, record)`` for each record that counts, last ledger first.

    A record counts when it is its row's latest in its ledger and no later ledger has a record
    of the same key. Records without a key (unreadable input records) always count.
    """
    ledgers = _distinct(ledgers)
    for ledger in ledgers:
        if not os.path.isfile(ledger):
            raise ConfigError(f"no ledger at {str(ledger)!r}")
    # Only the keys of the later ledgers are kept (the fix-up runs: usually few rows).
    later_keys: set[str] = set()
    for position in range(len(ledgers) - 1, -1, -1):
        keys_here: set[str] = set()
        for result in _latest_per_row(ledgers[position]):
            key = result.key
            if key and key in later_keys:
                continue
            if key and position:
                keys_here.add(key)
            yield position, result
        later_keys |= keys_here


def parse_row(data: dict[str, Any]) -> RowResult | None:
    """A row record as a ``RowResult``, or None when any field is not what the writer writes."""
    if data.get("type") != "row":
        return None
    row = data.get("row")
    status = _STATUS_BY_VALUE.get(data.get("status"))  # type: ignore[arg-type]
    line = data.get("line", 0)
    key = data.get("key", "")
    http_status = data.get("http_status")
    attempts = data.get("attempts", 0)
    error = data.get("error")
    ms = data.get("ms")
    if (
        status is None
        or not _is_int(row)
        or row < 1
        or not (line is None or (_is_int(line) and line >= 0))
        or not isinstance(key, str)
        or not (http_status is None or (_is_int(http_status) and 100 <= http_status <= 999))
        or not (attempts is None or (_is_int(attempts) and attempts >= 0))
        or not (error is None or isinstance(error, str))
        or not (ms is None or (isinstance(ms, int | float) and not isinstance(ms, bool) and _finite(ms)))
    ):
        return None
    return RowResult(row, line or 0, key, status, http_status, attempts or 0, error, ms)


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


def _distinct(ledgers: Sequence[LedgerPath]) -> list[LedgerPath]:
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


def _is_int(value: object) -> TypeGuard[int]:
    return type(value) is int


def _finite(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def write_failed(
    ledgers: LedgerPath | Sequence[LedgerPath], out: str, *, input_path: str | None = None
) -> int:
    """Write the input rows whose outcome is failed or invalid to ``out``; return how many.

    The rows are copied from the input each ledger names, in its own format (CSV with its header),
    followed by why each still needs attention: CSV columns ``_status,_http_status,_error,_row``,
    or a ``_bulkpatch`` object in each JSONL record. ``bulkpatch run`` ignores both, so the file
    can be fixed and fed back as it is. ``out`` is created private (0600) and is never a file of
    its own chain: one of the ledgers, the input one names, or an input that has a ledger.
    """
    chain = _distinct([ledgers] if isinstance(ledgers, str | os.PathLike) else list(ledgers))
    if input_path is not None and len(chain) > 1:
        raise ConfigError("--input goes with one LEDGER; each ledger names its own input")
    wanted: list[dict[int, RowResult]] = [{} for _ in chain]
    messages: dict[str, str] = {}
    for position, result in latest(chain):
        if result.status in (Status.FAILED, Status.INVALID):
            # One copy of each message: a million rows failing alike share one string.
            if result.error is not None and len(messages) < 10_000:
                result.error = messages.setdefault(result.error, result.error)
            wanted[position][result.row] = result
    sources = [_source_of(ledger, input_path) for ledger in chain]
    _refuse_own_chain(out, [*map(str, chain), *(name for name, _ in sources)])
    # The inputs with rows to copy; the last one alone when none has (for the CSV header).
    jobs = [(source, rows) for source, rows in zip(sources, wanted, strict=True) if rows]
    jobs = jobs or [(sources[-1], {})]
    written = 0
    with contextlib.ExitStack() as stack:
        inputs = [stack.enter_context(InputFile(name, fmt, keep_raw=True)) for (name, fmt), _ in jobs]
        header = _common_header(inputs)
        sink = stack.enter_context(_open_private(out))
        if header is not None:
            sink.write(csv_line([*header, *ANNOTATION_COLUMNS]) + "\n")
        for source, (_, rows) in zip(inputs, jobs, strict=True):
            annotate = _csv_annotator(source.header) if source.header is not None else _jsonl_annotated
            for record in source:
                outcome = rows.get(record.row)
                if outcome is not None and record.raw is not None:
                    sink.write(annotate(record.raw, outcome) + "\n")
                    written += 1
    return written


def _source_of(ledger: LedgerPath, input_path: str | None) -> tuple[str, str | None]:
    """The input file of ``ledger`` and its format (None: go by the file's extension)."""
    header = next((data for data in iter_records(ledger) if data.get("type") == "header"), {})
    named = header.get("input")
    named_path = named.get("path") if isinstance(named, dict) else None
    name = input_path or named_path
    if not isinstance(name, str) or not name or name == "-":
        raise ConfigError(f"ledger {str(ledger)!r} does not name a readable input; pass --input FILE")
    fmt = header.get("format")
    if name != named_path or not isinstance(fmt, str):
        return name, None  # another file: go by its own extension
    return name, fmt


def _refuse_own_chain(out: str, chain: list[str]) -> None:
    for path in chain:
        if _same_file(out, path):
            raise ConfigError(
                f"--failed-out {out!r} is a file of this report's own chain ({path}); pick another name"
            )
    if os.path.exists(out + ".ledger.jsonl"):
        raise ConfigError(
            f"--failed-out {out!r} is the input of the ledger {out + '.ledger.jsonl'!r}; pick another name"
        )


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # a hard link
    except OSError:
        return False


def _common_header(inputs: list[InputFile]) -> list[str] | None:
    """The CSV header to write (without annotation columns), or None for JSONL."""
    formats = {source.format for source in inputs}
    if len(formats) > 1:
        raise ConfigError("the ledgers' inputs are CSV and JSONL: write --failed-out from one at a time")
    headers = [_plain(source.header) for source in inputs if source.header is not None]
    if any(header != headers[0] for header in headers[1:]):
        raise ConfigError(
            "the ledgers' inputs have different CSV columns: write --failed-out from one at a time"
        )
    return headers[0] if headers else None


def _plain(header: list[str]) -> list[str]:
    return [name for name in header if name not in ANNOTATION_COLUMNS]


def _csv_annotator(header: list[str]) -> Callable[[str, RowResult], str]:
    keep = [at for at, name in enumerate(header) if name not in ANNOTATION_COLUMNS]
    width = len(header)

    def annotated(raw: str, result: RowResult) -> str:
        values = next(csv.reader(io.StringIO(raw, newline="")), [])
        if len(values) == width:  # an earlier run's annotations make way for this one's
            values = [values[at] for at in keep]
        http = "" if result.http_status is None else str(result.http_status)
        return csv_line([*values, result.status.value, http, result.error or "", str(result.row)])

    return annotated


def _jsonl_annotated(raw: str, result: RowResult) -> str:
    note = {
        "status": result.status.value,
        "http_status": result.http_status,
        "error": result.error,
        "row": result.row,
    }
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # not a JSON object: copied as it is, to be fixed
    if not isinstance(record, dict):
        return raw
    if ANNOTATION_KEY in record:
        record[ANNOTATION_KEY] = note
        return orjson.dumps(record).decode()
    # Spliced into the text as written, so that the row's own numbers keep their spelling.
    text = raw.rstrip()
    inside = text[:-1].rstrip()
    comma = "" if inside.endswith("{") else ","
    return f'{inside}{comma}"{ANNOTATION_KEY}":{orjson.dumps(note).decode()}}}'


@contextlib.contextmanager
def _open_private(out: str) -> Iterator[IO[str]]:
    """``out``, truncated, readable by its owner only: its rows may hold personal data."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {out!r}: {exc.strerror}") from None
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "wb") as raw:
        binary = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="wb")) if out.endswith(".gz") else raw
        with io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="") as text:
            yield text
