"""Stream records out of CSV and JSON Lines files, one at a time.

Nothing here holds more than one record: a 10 GB input costs the same memory as a 10-line one.
A record that cannot be read (invalid UTF-8, broken JSON, wrong column count) is yielded with an
``error`` instead of fields, so that the caller can record it and go on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import gzip
import io
import os
import stat
import sys
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, cast

import orjson

from bulkpatch.errors import ConfigError, InputError
from bulkpatch.rows.exact import may_hold_long_ints, with_exact_ints
from bulkpatch.rows.quotes import END, QuoteWatch

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"

# Python's csv module refuses fields over 128 KiB by default; a workload's attributes can be larger.
csv.field_size_limit(2**31 - 1)


class Format(StrEnum):
    """Input file format."""

    #: comma-separated values with a header row
    CSV = "csv"
    #: one JSON object per line (JSON Lines / NDJSON)
    JSONL = "jsonl"


@dataclass(slots=True)
class Record:
    """One input record: its position, and either its fields or why it could not be read."""

    #: 1-based index among data records (CSV: after the header; JSONL: non-blank lines)
    row: int
    #: physical line on which the record starts
    line: int
    #: the record's fields, or None when it could not be read
    fields: dict[str, Any] | None
    #: one-line reason the record could not be read
    error: str | None = None
    #: the record as written in the input (only when the reader was asked to keep it)
    raw: str | None = None


def is_stream(name: str) -> bool:
    """True for stdin (``-``), a pipe, a FIFO or ``/dev/fd/N``: readable once only, so nothing
    may open it besides the run (not to hash it, not to count its lines). False for a missing file:
    opening it says so."""
    if name == "-":
        return True
    try:
        return not stat.S_ISREG(os.stat(name).st_mode)
    except OSError:
        return False


def detect_format(name: str, explicit: str | None = None) -> Format:
    """Return the format named by ``explicit``, else the one the file name's extension implies."""
    if explicit:
        try:
            return Format(explicit.lower())
        except ValueError:
            raise ConfigError(f"--format must be csv or jsonl, not {explicit!r}") from None
    if name == "-":
        raise ConfigError("reading stdin needs --format csv or --format jsonl")
    stem = name[:-3] if name.endswith(".gz") else name
    suffix = Path(stem).suffix.lower()
    if suffix == ".csv":
        return Format.CSV
    if suffix in (".jsonl", ".ndjson"):
        return Format.JSONL
    raise ConfigError(f"cannot tell the format of {name!r} from its extension; pass --format")


class InputFile:
    """An open input: iterate it for records; ``bytes_read`` tells how far it got.

    >>> with InputFile("workloads.csv") as source:   # doctest: +SKIP
    ...     for record in source:
    ...         print(record.row, record.fields)
    """

    def __init__(self, name: str, fmt: str | None = None, *, keep_raw: bool = False) -> None:
        self.name = name
        self.format = detect_format(name, fmt)
        self.keep_raw = keep_raw
        self.header: list[str] | None = None
        self._raw: IO[bytes]
        if name == "-":
            self._raw = sys.stdin.buffer
        else:
            try:
                self._raw = open(name, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise ConfigError(f"cannot open input {name!r}: {exc.strerror}") from None
        self._stream: IO[bytes] = self._raw
        self._text: io.TextIOWrapper | None = None
        self._records: Iterator[Record]
        try:
            if _peek(self._raw, 2) == _GZIP_MAGIC:
                self._stream = cast(IO[bytes], gzip.GzipFile(fileobj=self._raw, mode="rb"))
            if self.format is Format.CSV:
                self._records = self._guard(self._csv_records())
            else:
                self._records = self._guard(self._jsonl_records())
        except BaseException:
            self.close()
            raise

    @property
    def bytes_read(self) -> int:
        """Bytes consumed from the file itself (compressed bytes for gzip)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[Record]:
        return self._records

    def close(self) -> None:
        if self._text is not None:
            # Detach, or the wrapper would close stdin when it is garbage collected.
            with contextlib.suppress(ValueError):
                self._text.detach()
            self._text = None
        if self._stream is not self._raw:
            self._stream.close()
        if self._raw is not sys.stdin.buffer:
            self._raw.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, records: Iterator[Record]) -> Iterator[Record]:
        """Turn a failure of the file itself (truncated gzip, I/O error) into an ``InputError``."""
        row = 0
        try:
            for record in records:
                row = record.row
                yield record
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"{self.name}: unreadable after row {row}: {exc}") from None

    def _jsonl_records(self) -> Iterator[Record]:
        loads = orjson.loads
        keep_raw = self.keep_raw
        row = 0
        for line_no, line in enumerate(self._stream, start=1):
            if line_no == 1 and line.startswith(_BOM):
                line = line[3:]
            if not line.strip():
                continue
            row += 1
            raw = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape") if keep_raw else None
            try:
                value = loads(line)
            except orjson.JSONDecodeError as exc:
                reason = "invalid UTF-8" if "UTF-8" in str(exc) else f"invalid JSON: {exc}"
                yield Record(row, line_no, None, reason, raw)
                continue
            if type(value) is not dict:
                yield Record(row, line_no, None, f"expected a JSON object, got {_json_kind(value)}", raw)
                continue
            if may_hold_long_ints(line):
                value = with_exact_ints(line, value)
            yield Record(row, line_no, value, None, raw)

    def _csv_records(self) -> Iterator[Record]:
        self._text = io.TextIOWrapper(
            self._stream, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        watch = QuoteWatch(self._text, self.name)
        reader = csv.reader(watch)
        header = self._read_header(reader, watch)
        return self._csv_rows(reader, header, watch)

    def _csv_rows(self, reader: Any, header: list[str], watch: QuoteWatch) -> Iterator[Record]:
        width = len(header)
        keep_raw = self.keep_raw
        row = 0
        last_line = reader.line_num
        while True:
            watch.start = last_line
            try:
                values = next(reader)
                if values and values[-1].endswith(END) and watch.at_end(values):
                    return
            except StopIteration:
                return
            except csv.Error as exc:
                row += 1
                yield Record(row, last_line + 1, None, f"unreadable CSV: {exc}")
                last_line = reader.line_num
                continue
            start = last_line + 1
            last_line = reader.line_num
            if not values or (len(values) == 1 and not values[0]):
                continue
            row += 1
            raw = csv_line(values) if keep_raw else None
            if len(values) != width:
                reason = f"expected {width} columns, found {len(values)}"
                yield Record(row, start, None, reason, raw)
                continue
            joined = "".join(values)
            if not joined.isascii():
                # Undecodable bytes were kept as lone surrogates: they cannot be re-encoded.
                try:
                    joined.encode("utf-8")
                except UnicodeEncodeError:
                    yield Record(row, start, None, "invalid UTF-8", raw)
                    continue
            yield Record(row, start, dict(zip(header, values, strict=True)), None, raw)

    def _read_header(self, reader: Any, watch: QuoteWatch) -> list[str]:
        try:
            header: list[str] = next(reader)
            if watch.at_end(header):
                raise StopIteration
        except StopIteration:
            raise ConfigError(f"{self.name}: the CSV file is empty (no header row)") from None
        except (csv.Error, OSError, EOFError) as exc:
            raise ConfigError(f"{self.name}: unreadable CSV header: {exc}") from None
        header = [name.strip() for name in header]
        if not any(header):
            raise ConfigError(f"{self.name}: the CSV header row is empty")
        if any(not name for name in header):
            raise ConfigError(f"{self.name}: the CSV header has an unnamed column")
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise ConfigError(f"{self.name}: the CSV header names {name!r} twice")
            seen.add(name)
        self.header = header
        return header


def _peek(stream: IO[bytes], size: int) -> bytes:
    peek = getattr(stream, "peek", None)
    if peek is not None:
        return bytes(peek(size)[:size])
    if stream.seekable():
        head = stream.read(size)
        stream.seek(0)
        return head
    return b""


def csv_line(values: list[str]) -> str:
    """One CSV record as text, without the line ending."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


class RowsInput:
    """Rows given as Python mappings instead of a file (the library's ``rows=``).

    Each row reads like one JSON Lines record: the path fields are taken out, the rest is the
    body. ``row`` and ``line`` are both the row's 1-based position. An async iterable is read by
    a task of its own into a small buffer; iterating yields ``None`` while the buffer is empty.
    """

    format = Format.JSONL
    header: list[str] | None = None
    bytes_read = 0

    def __init__(self, rows: Iterable[Any] | AsyncIterable[Any], *, name: str = "<rows>") -> None:
        self.name = name
        self._rows = rows
        self._buffer: collections.deque[Any] = collections.deque()
        self._more = asyncio.Event()
        self._room = asyncio.Event()
        self._done = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    def __iter__(self) -> Iterator[Record | None]:
        return self._records()

    def _records(self) -> Iterator[Record | None]:
        source: Iterator[Any] = (
            self._guarded(iter(self._rows)) if isinstance(self._rows, Iterable) else self._drain()
        )
        at = 0
        for row in source:
            if row is _EMPTY:
                yield None
                continue
            at += 1
            if isinstance(row, Mapping):
                yield Record(at, at, dict(row))
            else:
                yield Record(at, at, None, f"expected a mapping of fields, got {type(row).__name__}")

    def _guarded(self, rows: Iterator[Any]) -> Iterator[Any]:
        """The caller's rows; its failure midway is broken input, as for a file (the rows before
        it are still sent)."""
        try:
            yield from rows
        except Exception as exc:  # the caller's iterable: any failure of it
            raise InputError(f"{self.name}: the rows broke off: {type(exc).__name__}: {exc}") from None

    def _drain(self) -> Iterator[Any]:
        while True:
            if self._buffer:
                yield self._buffer.popleft()
                self._room.set()
            elif self._done:
                if self._error is not None:
                    raise InputError(f"{self.name}: the rows broke off: {self._error}") from None
                return
            else:
                if self._task is None:
                    self._task = asyncio.get_running_loop().create_task(self._fill())
                self._more.clear()
                yield _EMPTY

    async def wait(self) -> None:
        """Wait until more rows are buffered (or there will be none)."""
        if isinstance(self._rows, Iterable) or self._buffer or self._done:
            await asyncio.sleep(0)
            return
        await self._more.wait()

    async def _fill(self) -> None:
        assert not isinstance(self._rows, Iterable)
        try:
            async for row in self._rows:
                self._buffer.append(row)
                self._more.set()
                if len(self._buffer) >= _ROWS_BUFFER:
                    self._room.clear()
                    await self._room.wait()
        except Exception as exc:  # the caller's iterable failed: the run reports it as broken input
            self._error = exc
        finally:
            self._done = True
            self._more.set()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        close = getattr(self._rows, "close", None)
        if callable(close) and isinstance(self._rows, Iterator):
            close()


#: rows an async iterable may run ahead of the run
_ROWS_BUFFER = 1024
_EMPTY = object()
