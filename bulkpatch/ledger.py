"""The ledger: an append-only JSON Lines file with one record per finished row.

The first record (``"type": "header"``) binds the ledger to one input file and one path template,
so that a resume never applies a ledger to the wrong data. Row records are buffered and handed
to the operating system in one ``write`` per event-loop turn (and at least every
``max_buffer`` records), so a SIGKILL loses at most the rows that were in flight. A torn last
line, left by a crash mid-write, is skipped on reading and fenced off before the next append.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from bulkpatch.errors import ConfigError, LedgerError, LedgerMismatch

LEDGER_VERSION = 1
_HEAD_BYTES = 1 << 20


class Status(StrEnum):
    """How a row ended."""

    #: the server answered 2xx
    OK = "ok"
    #: sent, and refused for good or out of attempts
    FAILED = "failed"
    #: never sent: could not be parsed, mapped or validated
    INVALID = "invalid"
    #: never sent: nothing to send (e.g. no fields to update)
    SKIPPED = "skipped"


# One byte per row in the resume index; 0 means "no record yet".
_CODE = {Status.OK: 1, Status.FAILED: 2, Status.INVALID: 3, Status.SKIPPED: 4}
_STATUS_BY_VALUE = {s.value: s for s in Status}


@dataclass(slots=True)
class RowResult:
    """A row's outcome: one ledger line."""

    row: int
    line: int
    key: str
    status: Status
    http_status: int | None = None
    attempts: int = 0
    error: str | None = None
    #: milliseconds from the first request to the final answer
    ms: float | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "type": "row",
                "row": self.row,
                "line": self.line,
                "key": self.key,
                "status": self.status.value,
                "http_status": self.http_status,
                "attempts": self.attempts,
                "error": self.error,
                "ms": self.ms,
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RowResult:
        return cls(
            row=int(data["row"]),
            line=int(data.get("line") or 0),
            key=str(data.get("key", "")),
            status=_STATUS_BY_VALUE[data["status"]],
            http_status=data.get("http_status"),
            attempts=int(data.get("attempts") or 0),
            error=data.get("error"),
            ms=data.get("ms"),
        )


def input_identity(name: str) -> dict[str, Any]:
    """What binds a ledger to its input: its size and a hash of its first MiB (and, for people, its path)."""
    if name == "-":
        return {"path": "-"}
    path = Path(name)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = hashlib.sha256(f.read(_HEAD_BYTES)).hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read input {name!r}: {exc.strerror}") from None
    return {"path": str(path.resolve()), "size": size, "sha256_head": head}


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield every well-formed record of a ledger; torn or garbled lines are skipped."""
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            try:
                data = loads(line)
            except orjson.JSONDecodeError:
                continue
            if type(data) is dict:
                yield data


class LedgerIndex:
    """The latest status of every row, one byte per row: all a resume needs to know."""

    def __init__(self) -> None:
        self._codes = bytearray()
        self.header: dict[str, Any] | None = None

    def set(self, row: int, status: Status) -> None:
        codes = self._codes
        if row >= len(codes):
            codes.extend(bytes(max(row + 1 - len(codes), len(codes) // 2, 1024)))
        codes[row] = _CODE[status]

    def get(self, row: int) -> Status | None:
        code = self._codes[row] if row < len(self._codes) else 0
        return _STATUSES[code]

    def done_rows(self, *, retry_failed: bool) -> bytearray:
        """A mask: byte ``row`` is 1 when that row must not be sent again."""
        done = {1, 3, 4} if retry_failed else {1, 2, 3, 4}
        table = bytes(1 if code in done else 0 for code in range(256))
        return bytearray(self._codes.translate(table))

    def counts(self) -> dict[Status, int]:
        return {status: self._codes.count(code) for status, code in _CODE.items()}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LedgerIndex:
        index = cls()
        for data in iter_records(path):
            kind = data.get("type")
            if kind == "row":
                status = _STATUS_BY_VALUE.get(data.get("status"))  # type: ignore[arg-type]
                row = data.get("row")
                if status is not None and isinstance(row, int) and row > 0:
                    index.set(row, status)
            elif kind == "header" and index.header is None:
                index.header = data
        return index


_STATUSES: list[Status | None] = [None] * 256
for _status, _code in _CODE.items():
    _STATUSES[_code] = _status


class LedgerWriter:
    """Appends records to a ledger file; ``write`` never blocks on more than one ``write(2)``."""

    def __init__(self, path: str | os.PathLike[str], *, max_buffer: int = 256) -> None:
        self.path = Path(path)
        self._max_buffer = max_buffer
        self._buffer: list[bytes] = []
        self._scheduled = False
        #: why the ledger can no longer be written, once it cannot
        self.error: LedgerError | None = None
        #: called once when a write fails (the run stops on it)
        self.on_error: Callable[[LedgerError], None] | None = None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open ledger {str(path)!r}: {exc.strerror}") from None
        # A crash mid-write can leave a torn last line: start ours on a fresh one.
        size = os.fstat(self._fd).st_size
        if size and stat.S_ISREG(os.fstat(self._fd).st_mode):
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def write_event(self, kind: str, **fields: Any) -> None:
        """Append a non-row record (header, run start/end) and hand it to the OS at once."""
        self._buffer.append(orjson.dumps({"type": kind, "ts": round(time.time(), 3), **fields}))
        self.flush()

    def write(self, result: RowResult) -> None:
        """Append a row record; it reaches the OS at the end of this event-loop turn."""
        self._buffer.append(result.to_json())
        if len(self._buffer) >= self._max_buffer:
            self.flush()
        elif not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand the buffered records to the OS. A failure (disk full) is kept in ``error``,
        reported to ``on_error``, and every later write is refused: a ledger with a hole in the
        middle would claim rows that it lost."""
        self._scheduled = False
        if not self._buffer or self.error is not None:
            return
        data = b"\n".join(self._buffer) + b"\n"
        self._buffer.clear()
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.error = LedgerError(f"cannot write ledger {self.path}: {exc.strerror}")
            if self.on_error is not None:
                self.on_error(self.error)

    def close(self) -> None:
        if self._fd < 0:
            return
        self.flush()
        if stat.S_ISREG(os.fstat(self._fd).st_mode):
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1


def open_ledger(path: str | os.PathLike[str], binding: dict[str, Any]) -> tuple[LedgerWriter, LedgerIndex]:
    """Open a ledger for a run: check that it belongs to ``binding``, or start it with a header."""
    # Only a regular file can be resumed from (/dev/null, a pipe or a device cannot).
    index = LedgerIndex.load(path) if os.path.isfile(path) else LedgerIndex()
    header = index.header
    if header is not None:
        _check_binding(str(path), header, binding)
    writer = LedgerWriter(path)
    if header is None:
        writer.write_event("header", version=LEDGER_VERSION, **binding)
        index.header = {"type": "header", **binding}
    return writer, index


def _check_binding(path: str, header: dict[str, Any], binding: dict[str, Any]) -> None:
    if header.get("path_template") != binding["path_template"]:
        raise LedgerMismatch(
            f"ledger {path} was written for --path {header.get('path_template')!r}, "
            f"not {binding['path_template']!r}; use another --ledger"
        )
    had, has = header.get("input") or {}, binding["input"]
    # Bound to the content, not the path: a copied or moved input still resumes.
    if had.get("size") != has.get("size") or had.get("sha256_head") != has.get("sha256_head"):
        raise LedgerMismatch(
            f"ledger {path} belongs to another input ({had.get('path')!r} as it was then), "
            f"not {has.get('path')!r}; resume with the original file or use another --ledger"
        )
