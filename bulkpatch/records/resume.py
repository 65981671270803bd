"""Resuming: which rows this ledger already answered, and the request fingerprints.

The index says, per row of this input, the latest status and the fingerprint of the request it
answers (BLAKE2b-64 of method, URL and body). It never proves a request applied on its own — the
memory does that (``engine/truth.py``): the index says what this ledger already told the user,
so that a resume writes nothing twice, and which failures ``--retry-failed`` sends again.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from enum import StrEnum
from typing import Any

from bulkpatch.records.ledger import (
    RowResult,
    Status,
    is_transient,
    iter_records,
)

# One byte per row in the index; 0 means "no record yet". A failure is either "final" (the API
# refused the request as it is) or "transient" (it ran out of attempts on a retryable answer).
_OK, _FAILED, _INVALID, _SKIPPED, _TRANSIENT, _UNCHANGED = 1, 2, 3, 4, 5, 6
#: the codes of an ``ok`` and an ``unchanged`` row in ``LedgerIndex.codes``
OK_CODE, UNCHANGED_CODE = _OK, _UNCHANGED
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
