"""From input records to the requests worth sending, in input order.

Every record is mapped and fingerprinted, then judged by the one rule in ``truth.py`` against
the memory (what was last applied to each key) and this input's ledger:

* sent (yielded);
* recorded without sending: ``unchanged`` (proved applied), ``invalid`` (could not be mapped) or
  ``skipped`` (nothing to send) — through the recorder, the one writer of outcomes;
* or passed over: this ledger holds that very answer already (a resume).

The intake is one generator that all workers pull from: nothing is materialized and no task is
created per row. Records are read ``BATCH`` at a time and looked up in the memory with one query
per batch. It yields ``None`` now and then while it passes over rows without sending any, so that
a long stretch of done rows never keeps the event loop (progress, signals) waiting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from bulkpatch.engine.key_order import SentKeys
from bulkpatch.engine.truth import Verdict, decide
from bulkpatch.errors import BulkPatchError, InputError, LedgerError
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.memory import Memory
from bulkpatch.records.resume import LedgerIndex, RetryFailed, fingerprint, rejection_fingerprint
from bulkpatch.rows.mapping import Mapper, Rejected, Request
from bulkpatch.rows.reader import Record

#: records read (and looked up in the memory) at a time: one query and, when some are sent, one
#: commit per batch
BATCH = 256
#: rows passed over without yielding before the intake yields ``None`` to let the loop breathe
_BREATHE = 512
_Batch = list[tuple[int, Request | Rejected, int]]


class Intake:
    """Iterate ``requests()`` for what to send; the counters say what was passed over."""

    def __init__(
        self,
        records: Iterator[Record | None],
        mapper: Mapper,
        record: Callable[[RowResult], None],
        index: LedgerIndex,
        *,
        prefix: bytes,
        memory: Memory | None = None,
        retry_failed: RetryFailed = RetryFailed.NONE,
        heal: bool = False,
        full: bool = False,
        limit: int | None = None,
        stopping: Callable[[], bool] = lambda: False,
        on_error: Callable[[BulkPatchError], None] | None = None,
        shard: tuple[int, int] | None = None,
        unchanged: Callable[[int], bool] | None = None,
    ) -> None:
        self._records = records
        self._mapper = mapper
        self._record = record
        self._index = index
        self._prefix = prefix
        self._memory = memory
        self._retry_failed = retry_failed
        self._heal = heal
        self._full = full
        self._budget = limit
        self._stopping = stopping
        self._on_error = on_error
        self._shard = shard
        self._unchanged = unchanged
        self._sent = SentKeys()
        #: rows left to the other shards
        self.other_shards = 0
        #: rows read from the input (sent, recorded or passed over)
        self.rows_read = 0
        #: rows not sent because this ledger already holds the answer to the same request
        self.already_done = 0
        #: rows whose request differs from the one last applied to their key
        self.changed = 0
        #: True when ``limit`` ended the intake before the end of the input
        self.limited = False
        #: True once the whole input was read (not stopped, not limited, not broken off)
        self.complete = False

    @property
    def repeated_keys(self) -> int:
        """Keys that more than one row sent by this run was for."""
        return self._sent.repeated

    def requests(self) -> Iterator[Request | None]:
        """The requests to send, in input order; ``None`` now and then (see the module docstring)."""
        index = self._index
        done = index.done_mask(self._retry_failed)
        codes, fps, known = index.codes, index.fps, len(done)
        heal, full, record, memory = self._heal, self._full, self._record, self._memory
        sent, unchanged = self._sent, self._unchanged
        quiet = 0
        for batch in self._batches():
            if not batch:
                yield None
                continue
            found = memory.lookup(_keys(batch)) if memory is not None else {}
            to_send: list[Request] = []
            for row, mapped, fp in batch:
                if self._stopping():
                    break
                key = mapped.key
                code, code_fp = (codes[row], fps[row]) if row < known else (0, 0)
                if type(mapped) is not Request:
                    assert isinstance(mapped, Rejected)
                    if code and code_fp == fp:
                        self.rows_read += 1
                        self.already_done += 1
                        quiet += 1
                        continue
                    verdict = None
                else:
                    last = found.get(key)
                    if last is not None and last[0] and last[0] != fp:
                        self.changed += 1
                    if full:
                        verdict = Verdict.SEND
                    elif unchanged is not None and not (key and key in sent):
                        verdict = Verdict.UNCHANGED if unchanged(row) else Verdict.SEND
                        if verdict is Verdict.UNCHANGED and last is not None and last[0] != fp and memory:
                            memory.void(key)  # live differs from the last request applied: no proof
                    else:
                        verdict = decide(
                            key,
                            fp,
                            row,
                            last,
                            code,
                            code_fp,
                            resend=bool(code) and (heal or not done[row]),
                            sent_before=bool(key) and key in sent,
                        )
                    if verdict is not Verdict.SEND:
                        self.rows_read += 1
                        if verdict is Verdict.ALREADY:
                            self.already_done += 1
                        else:
                            record(RowResult(row, mapped.line, key, Status.UNCHANGED, fp=fp))
                        quiet += 1
                        continue
                if self._budget is not None:
                    if self._budget == 0:
                        self.limited = True
                        break
                    self._budget -= 1
                self.rows_read += 1
                if verdict is None:
                    assert isinstance(mapped, Rejected)
                    status = Status(mapped.status)
                    record(RowResult(row, mapped.line, key, status, None, 0, mapped.reason, None, fp))
                    continue
                if key:
                    sent.add(key)
                to_send.append(mapped)  # type: ignore[arg-type]
            if to_send:
                quiet = 0
                if memory is not None:
                    # Before they go: a key whose answer never comes (kill -9) is sent again next time.
                    try:
                        memory.intend([r.key for r in to_send if r.key])
                    except LedgerError as exc:
                        if self._on_error is not None:
                            self._on_error(exc)
                        return
                for request in to_send:
                    if self._stopping():
                        return
                    yield request
            elif quiet >= _BREATHE:
                quiet = 0
                yield None
            if self.limited or self._stopping():
                return
        self.complete = not self.limited and not self._stopping() and not self._broken

    _broken = False

    def _batches(self) -> Iterator[_Batch]:
        """Mapped and fingerprinted records, ``BATCH`` at a time; a broken input ends them."""
        mapper_map = self._mapper.map
        prefix = self._prefix
        shard, shards = self._shard or (0, 1)
        batch: _Batch = []
        try:
            for record in self._records:
                if record is None:  # rows given in code, not here yet
                    if batch:
                        yield batch
                        batch = []
                    yield []
                    continue
                mapped = mapper_map(record)
                if shards > 1 and shard_of(mapped.key, shards) != shard:
                    self.other_shards += 1
                    continue
                if type(mapped) is Request:
                    fp = mapped.fp = fingerprint(prefix, mapped.path, mapped.body)
                else:
                    assert isinstance(mapped, Rejected)
                    fp = rejection_fingerprint(mapped.status, mapped.key, mapped.reason)
                batch.append((record.row, mapped, fp))
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
        except InputError as exc:
            # The file broke off (truncated gzip): the rows read so far still count.
            self._broken = True
            if batch:
                yield batch
                batch = []
            if self._on_error is not None:
                self._on_error(exc)
        if batch:
            yield batch


def shard_of(key: str, shards: int) -> int:
    """The shard a key belongs to: the same on every machine and Python version (no ``hash()``)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def _keys(batch: _Batch) -> list[str]:
    return [mapped.key for _, mapped, _ in batch if mapped.key]
