"""Resuming: which rows a ledger already answered, and opening a ledger for a run.

A row counts as done only when the ledger holds an outcome for *the same request* at that row:
its record's ``fp`` (BLAKE2b-64 of method, URL and body) must equal the fingerprint of the request
the row maps to now. A row number alone proves nothing: an edited input, another file piped into
the same ledger, or a changed ``--base-url`` all map to other requests and are sent.

``open_ledger`` also guards the file itself: it locks the ledger so that one run writes it at a
time (an OS lock, gone with the process, ``kill -9`` included), refuses to append to a file that
is not a ledger (a typo'd ``--ledger`` must not corrupt the input or anything else), and keeps an
earlier run's ledger under a dated name when the input at the same path has changed since. The
new run still trusts what that ledger proved applied: a row whose request it answered 2xx is
copied into the new ledger instead of being sent again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from bulkpatch.errors import ConfigError
from bulkpatch.records.ledger import (
    LEDGER_VERSION,
    LedgerWriter,
    RowResult,
    Status,
    is_transient,
    iter_records,
)
from bulkpatch.rows.reader import is_stream

# One byte per row in the index; 0 means "no record yet". A failure is either "final" (the API
# refused the request as it is) or "transient" (it ran out of attempts on a retryable answer).
_OK, _FAILED, _INVALID, _SKIPPED, _TRANSIENT, _UNCHANGED = 1, 2, 3, 4, 5, 6
#: the code of an ``ok`` row in ``LedgerIndex.codes``
OK_CODE = _OK
_CODE = {
    Status.OK: _OK,
    Status.FAILED: _FAILED,
    Status.INVALID: _INVALID,
    Status.SKIPPED: _SKIPPED,
    Status.UNCHANGED: _UNCHANGED,
}
_STATUS_OF_CODE: list[Status | None] = [None] * 256
for _status, _code in _CODE.items():
    _STATUS_OF_CODE[_code] = _status
_STATUS_OF_CODE[_TRANSIENT] = Status.FAILED
#: rows beyond this many (plus ``_ROW_SLACK_PER_RECORD`` per record read, enough for a shard that
#: takes 1/256 of the rows) are taken for garbage
_ROW_SLACK = 1 << 20
_ROW_SLACK_PER_RECORD = 256


class RetryFailed(StrEnum):
    """Which failed rows ``--retry-failed`` sends again."""

    #: none: a failed row stays failed until its request changes
    NONE = "none"
    #: failures that may pass another time: 408/425/429/5xx, timeouts, connection errors
    TRANSIENT = "transient"
    #: every failed row, 4xx refusals included
    ALL = "all"


def fingerprint(prefix: bytes, path: str, body: bytes | None) -> int:
    """The request's identity: BLAKE2b-64 of ``prefix`` (method and base URL), path and body.

    Never 0, which stands for "no fingerprint" in the index.
    """
    digest = hashlib.blake2b(
        prefix + path.encode("utf-8", "surrogatepass") + b"\0" + (body or b""), digest_size=8
    )
    return int.from_bytes(digest.digest(), "big") or 1


def request_prefix(method: str, base_url: str) -> bytes:
    """The part of every fingerprint that is the same for a whole run."""
    return f"{method.upper()}\0{base_url.rstrip('/')}\0".encode("utf-8", "surrogatepass")


def rejection_fingerprint(status: str, key: str, reason: str) -> int:
    """The identity of a row that was not sent: the same record rejected the same way."""
    return fingerprint(b"!" + status.encode() + b"\0", key, reason.encode("utf-8", "surrogatepass"))


class LedgerIndex:
    """The latest status and request fingerprint of every row: 9 bytes per row."""

    def __init__(self) -> None:
        self.codes = bytearray()
        self.fps = array("Q")
        self.header: dict[str, Any] | None = None
        #: row records that were skipped as malformed (wrong types, absurd row numbers)
        self.garbled = 0

    def set(self, result: RowResult) -> None:
        row = result.row
        codes = self.codes
        if row >= len(codes):
            grow = max(row + 1 - len(codes), len(codes) // 2, 1024)
            codes.extend(bytes(grow))
            self.fps.frombytes(bytes(8 * grow))
        code = _CODE[result.status]
        if code == _FAILED and is_transient(result):
            code = _TRANSIENT
        codes[row] = code
        self.fps[row] = result.fp

    def get(self, row: int) -> Status | None:
        return _STATUS_OF_CODE[self.codes[row]] if row < len(self.codes) else None

    def done_mask(self, retry_failed: RetryFailed = RetryFailed.NONE) -> bytes:
        """A mask over rows: byte ``row`` is 1 when that row's recorded request needs no resend."""
        done = {_OK, _INVALID, _SKIPPED, _UNCHANGED, _FAILED, _TRANSIENT}
        if retry_failed is not RetryFailed.NONE:
            done.discard(_TRANSIENT)
        if retry_failed is RetryFailed.ALL:
            done.discard(_FAILED)
        table = bytes(1 if code in done else 0 for code in range(256))
        return bytes(self.codes.translate(table))

    def transient_failures(self) -> int:
        """Rows whose latest outcome is a failure that may pass another time."""
        return self.codes.count(_TRANSIENT)

    def counts(self) -> dict[Status, int]:
        counts = {status: self.codes.count(code) for status, code in _CODE.items()}
        counts[Status.FAILED] += self.codes.count(_TRANSIENT)
        return counts

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LedgerIndex:
        """Read a ledger; malformed records are skipped like torn lines.

        Records arrive in about row order, so a row number far beyond what the records read so
        far can reach is garbage: taking it would let one line claim gigabytes of index.
        """
        index = cls()
        accepted = 0
        for data in iter_records(path):
            kind = data.get("type")
            if kind == "row":
                result = RowResult.from_json(data)
                if result is None or result.row > _ROW_SLACK + _ROW_SLACK_PER_RECORD * accepted:
                    index.garbled += 1
                    continue
                index.set(result)
                accepted += 1
            elif kind == "header" and index.header is None:
                index.header = data
        return index


@dataclass
class OpenLedger:
    """A ledger opened for a run: its writer, what it already holds, and what happened opening it."""

    writer: LedgerWriter
    index: LedgerIndex
    #: where an earlier run's ledger was kept, when the input had changed since
    archived: str | None = None
    #: that ledger's index: rows it answered with the very request they map to now need no resend
    carried: LedgerIndex | None = None
    #: file descriptors locked for the run (the ledger, and an archived one); closed by ``close``
    _locks: list[int] = field(default_factory=list)

    def close(self) -> None:
        self.writer.close()
        for fd in self._locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._locks.clear()


def input_identity(name: str) -> dict[str, Any]:
    """For the ledger header: the input's path and, for a regular file, its size and SHA-256.

    A pipe, FIFO or ``/dev/fd/N`` is never opened here: reading it would take rows away from the
    run (it is read once, by the run, like ``-``).
    """
    if is_stream(name):
        return {"path": name}
    try:
        size = os.stat(name).st_size
    except OSError as exc:
        raise ConfigError(f"cannot open input {name!r}: {exc.strerror}") from None
    return {"path": str(Path(name).resolve()), "size": size, "sha256": file_sha256(name)}


def file_sha256(name: str) -> str:
    """The SHA-256 of a file's content (hex); ``ConfigError`` when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(name, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot open input {name!r}: {exc.strerror}") from None
    return digest.hexdigest()


def open_ledger(path: str, binding: dict[str, Any], *, input_name: str | None = None) -> OpenLedger:
    """Open ``path`` for a run: lock it, check it is a ledger, keep it or start a new one."""
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise ConfigError(f"cannot open ledger {path!r}: {exc.strerror}") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        # /dev/null, a pipe: written to, never read back, never locked (two benchmarks may share it).
        return OpenLedger(LedgerWriter(path), LedgerIndex())
    if info is not None and input_name not in (None, "-"):
        with contextlib.suppress(OSError):
            if os.path.samefile(path, input_name):
                raise ConfigError(f"--ledger {path} is the input itself; choose another file")
    fd = _open_locked(path)
    locks = [fd]
    try:
        header = _first_record(path) if info is not None and info.st_size else None
        if info is not None and info.st_size and (header is None or header.get("type") != "header"):
            raise ConfigError(
                f"--ledger {path} is not a bulkpatch ledger (its first line is no ledger header);"
                " refusing to append to it"
            )
        archived = carried = None
        if header is not None and _another_input(header, binding):
            had = (header.get("input") or {}).get("path")
            raise ConfigError(
                f"ledger {path} belongs to another input ({had}, other content); choose another --ledger"
            )
        if header is not None and _stale(header, binding):
            if header.get("version") == LEDGER_VERSION:
                carried = LedgerIndex.load(path)
            archived = _archive_name(path, header)
            os.rename(path, archived)
            fd = _open_locked(path)
            locks.append(fd)
            header = None
        index = LedgerIndex.load(path) if header is not None else LedgerIndex()
        writer = LedgerWriter(path, fd=os.dup(fd))
        if header is None:
            writer.write_event("header", version=LEDGER_VERSION, **binding)
            index.header = {"type": "header", "version": LEDGER_VERSION, **binding}
        return OpenLedger(writer, index, archived, carried, locks)
    except BaseException:
        for lock in locks:
            os.close(lock)
        raise


def _open_locked(path: str) -> int:
    return open_locked(path, os.O_WRONLY | os.O_APPEND, "ledger", lambda: _holder(path))


def open_locked(path: str, flags: int, what: str, holder: Callable[[], str]) -> int:
    """Open (creating it 0600) and lock ``path`` for this run alone: an OS lock, released when the
    process ends, ``kill -9`` included. Locked already: one ``ConfigError`` naming ``holder()``."""
    try:
        fd = os.open(path, flags | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open {what} {path!r}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"{what} {path} is in use by {holder()}; wait for it to end") from None
    except OSError:
        pass  # a file system without locks (some network mounts): go on unguarded
    return fd


def _holder(path: str) -> str:
    """Who holds the ledger: the last run that started writing it."""
    start = None
    with contextlib.suppress(OSError):
        for data in iter_records(path):
            if data.get("type") == "run" and data.get("event") == "start":
                start = data
    if start is None or not isinstance(start.get("pid"), int):
        return "another bulkpatch run"
    when = _utc(start.get("ts"), "%H:%M:%S UTC")
    return f"another bulkpatch run (pid {start['pid']}, started {when})"


def _first_record(path: str) -> dict[str, Any] | None:
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    try:
        data = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _stale(header: dict[str, Any], binding: dict[str, Any]) -> bool:
    """True when the ledger was written by an older bulkpatch, or for other input content."""
    if header.get("version") != LEDGER_VERSION:
        return True
    had, has = header.get("input") or {}, binding.get("input") or {}
    return bool(had.get("sha256") and has.get("sha256") and had["sha256"] != has["sha256"])


def _another_input(header: dict[str, Any], binding: dict[str, Any]) -> bool:
    """True when the ledger was written for a file at another path with other content: a typo'd
    ``--ledger``, whose ledger must not be moved away. (Same content elsewhere is a moved or copied
    input, which resumes; other content at the same path is the input's next version.)"""
    had, has = header.get("input") or {}, binding.get("input") or {}
    if not (had.get("sha256") and has.get("sha256")) or had["sha256"] == has["sha256"]:
        return False
    return bool(had.get("path") and has.get("path") and had["path"] != has["path"])


def _archive_name(path: str, header: dict[str, Any]) -> str:
    """``x.ledger.jsonl`` → ``x.ledger.20261125T020000Z.jsonl`` (the earlier run's start)."""
    stamp = _utc(header.get("ts"), "%Y%m%dT%H%M%SZ")
    stem, dot, ext = path.rpartition(".") if path.endswith(".jsonl") else (path, ".", "jsonl")
    candidate = f"{stem}.{stamp}{dot}{ext}"
    n = 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}.{stamp}-{n}{dot}{ext}"
    return candidate


def _utc(ts: object, fmt: str) -> str:
    seconds = float(ts) if isinstance(ts, (int, float)) else time.time()
    return time.strftime(fmt, time.gmtime(seconds))
