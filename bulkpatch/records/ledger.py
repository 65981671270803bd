"""The ledger: an append-only JSON Lines file with one record per finished row.

The first record (``"type": "header"``) says, for people, which input and path template the
ledger was written for; what a resume trusts is each row record's ``fp``, the fingerprint of the
request it answers (see ``resume.py``). Row records are buffered and handed to the operating
system in one ``write`` per event-loop turn (and at least every ``max_buffer`` records), so a
SIGKILL loses at most the rows that were in flight. A torn last line, left by a crash mid-write,
is skipped on reading and fenced off before the next append. Ledgers are created 0600: they may
name hosts and ids that are nobody else's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from bulkpatch.errors import ConfigError, LedgerError

#: 2: row records carry ``fp``, and a resume matches on it instead of trusting row numbers
LEDGER_VERSION = 2


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
    #: never sent: the sync state says this very request was applied already
    UNCHANGED = "unchanged"


STATUS_BY_VALUE = {s.value: s for s in Status}
#: how a failure that ran out of attempts ends its reason: it may pass another time
GAVE_UP = "(gave up after"
#: attempts a record may count (--max-attempts is at most 100): a larger number is a garbled line,
#: and summed over a report it would overflow the JSON writer
_MOST_ATTEMPTS = 1 << 32


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
    #: fingerprint of the request (or of the rejection) this record answers; 0: unknown
    fp: int = 0
    #: Unix time the outcome was written (ms precision); None: a ledger older than the field
    ts: float | None = None

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
                "fp": f"{self.fp:016x}",
                "ts": self.ts,
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RowResult | None:
        """The row record in ``data``, or None when any field is not what ``to_json`` writes
        (a hand-edited or garbled line is skipped like a torn one)."""
        if data.get("type") != "row":
            return None
        row, line, key = data.get("row"), data.get("line", 0), data.get("key", "")
        status_text = data.get("status")
        status = STATUS_BY_VALUE.get(status_text) if type(status_text) is str else None
        http, attempts, error, ms = (data.get(k) for k in ("http_status", "attempts", "error", "ms"))
        if (
            status is None
            or type(row) is not int
            or row < 1
            or not (line is None or (type(line) is int and line >= 0))
            or type(key) is not str
            or not (http is None or (type(http) is int and 100 <= http <= 999))
            or not (attempts is None or (type(attempts) is int and 0 <= attempts <= _MOST_ATTEMPTS))
            or not (error is None or type(error) is str)
            or not (ms is None or (type(ms) in (int, float) and math.isfinite(ms) and ms >= 0))
        ):
            return None
        fp, ts = parse_fp(data.get("fp")), _timestamp(data.get("ts"))
        return cls(row, line or 0, key, status, http, attempts or 0, error, ms, fp, ts)


def is_transient(result: RowResult) -> bool:
    """A failure that ran out of attempts on retryable answers (5xx, 429, timeouts, connection
    errors), as opposed to a refusal of the request itself (4xx) or a POST not resent (unsure)."""
    return result.status is Status.FAILED and GAVE_UP in (result.error or "")


def parse_fp(value: object) -> int:
    """A record's ``fp`` field as a number; 0 for a missing or malformed one (matches nothing)."""
    if type(value) is str and len(value) == 16:
        try:
            return int(value, 16)
        except ValueError:
            return 0
    return 0


def _timestamp(value: object) -> float | None:
    """A record's ``ts``; None for a missing or malformed one (only the report's charts read it,
    so a bad one costs the row its place there, not its count)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return value
    return None


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield every well-formed record of a ledger; torn or garbled lines are skipped."""
    return iter_records_from(path, 0)


def iter_records_from(path: str | os.PathLike[str], offset: int) -> Iterator[dict[str, Any]]:
    """``iter_records`` from byte ``offset`` on (a line boundary the writer reported)."""
    loads = orjson.loads
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            try:
                data = loads(line)
            except orjson.JSONDecodeError:
                continue
            if type(data) is dict:
                yield data


class LedgerWriter:
    """Appends records to a ledger file; ``write`` never blocks on more than one ``write(2)``."""

    def __init__(self, path: str | os.PathLike[str], *, max_buffer: int = 256, fd: int | None = None) -> None:
        self.path = Path(path)
        self._max_buffer = max_buffer
        self._buffer: list[bytes] = []
        self._scheduled = False
        #: why the ledger can no longer be written, once it cannot
        self.error: LedgerError | None = None
        #: called once when a write fails (the run stops on it)
        self.on_error: Callable[[LedgerError], None] | None = None
        if fd is None:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigError(f"cannot open ledger {str(path)!r}: {exc.strerror}") from None
        self._fd = fd
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
        """Append a row record, stamped with the time of its outcome (``ts``) unless it has one;
        it reaches the OS at the end of this event-loop turn."""
        if result.ts is None:
            # Whole milliseconds over 1000 print as 3 decimals; round(t, 3) costs four times more.
            result.ts = round(time.time() * 1000) / 1000
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

    def size(self) -> int:
        """Flush, then the bytes the file holds (what a crash would leave)."""
        self.flush()
        try:
            return os.fstat(self._fd).st_size
        except OSError:
            return 0

    def close(self) -> None:
        if self._fd < 0:
            return
        self.flush()
        if stat.S_ISREG(os.fstat(self._fd).st_mode):
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
