"""From input records to the requests worth sending, in input order.

Every record is mapped, fingerprinted and then either

* skipped: the ledger already holds an answer to this very request at this row (a resume; or
  the ledger of the input's earlier version proved it applied, and it is copied over), or the
  sync state says this very request was the last one applied to its key, or ``--only-changed``
  found the live workload already equal (``unchanged``);
* recorded without sending: it could not be mapped (``invalid``) or has nothing to send
  (``skipped``); or
* yielded, to be sent.

The intake is one generator that all workers pull from: nothing is materialized and no task is
created per row. Records are read ``BATCH`` at a time (and looked up in the sync state with
one query per batch). It yields ``None`` now and then while it passes over rows without sending any,
so that a long stretch of done rows never keeps the event loop (progress, signals) waiting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from bulkpatch.engine.key_order import SentKeys
from bulkpatch.engine.recorder import Recorder
from bulkpatch.errors import InputError
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.resume import OK_CODE, LedgerIndex, RetryFailed, fingerprint, rejection_fingerprint
from bulkpatch.records.sync_state import SyncState
from bulkpatch.rows.mapping import Mapper, Rejected, Request
from bulkpatch.rows.reader import Record

#: records read (and looked up in the sync state) at a time: a loop over a list costs less than a
#: generator step per row, and one query per batch less than one per row
BATCH = 64
#: the same with a sync state: each batch costs two SQLite commits (answers, then the next keys
#: as pending), so larger batches keep the state's cost small
STATE_BATCH = 256
#: rows passed over without yielding before the intake yields ``None`` to let the loop breathe
_BREATHE = 512


class Intake:
    """Iterate ``requests()`` for what to send; the counters say what was passed over."""

    def __init__(
        self,
        records: Iterator[Record | None],
        mapper: Mapper,
        recorder: Recorder,
        *,
        prefix: bytes,
        retry_failed: RetryFailed = RetryFailed.NONE,
        limit: int | None = None,
        state: SyncState | None = None,
        stopping: Callable[[], bool] = lambda: False,
        on_error: Callable[[InputError], None] | None = None,
        shard: tuple[int, int] | None = None,
        carried: LedgerIndex | None = None,
        unchanged: Callable[[int], bool] | None = None,
    ) -> None:
        self._records = records
        self._mapper = mapper
        self._recorder = recorder
        self._prefix = prefix
        self._retry_failed = retry_failed
        self._budget = limit
        self._state = state
        self._stopping = stopping
        self._on_error = on_error
        self._shard = shard
        self._carried = carried
        self._unchanged = unchanged
        self._sent = SentKeys()
        #: rows left to the other shards
        self.other_shards = 0
        #: rows read from the input (sent, recorded or passed over)
        self.rows_read = 0
        #: rows not sent because the ledger already answered the same request
        self.already_done = 0
        #: rows whose request differs from the one last recorded for them (ledger or state)
        self.changed = 0
        #: True when ``limit`` ended the intake before the end of the input
        self.limited = False

    @property
    def repeated_keys(self) -> int:
        """Keys that more than one row sent by this run was for."""
        return self._sent.repeated

    def requests(self) -> Iterator[Request | None]:
        """The requests to send, in input order; ``None`` now and then (see the module docstring)."""
        index = self._recorder.index
        done = index.done_mask(self._retry_failed)
        codes, fps, known = index.codes, index.fps, len(done)
        record = self._recorder.record
        state = self._state
        carried = self._carried or LedgerIndex()
        carried_codes, carried_fps, carried_known = carried.codes, carried.fps, len(carried.codes)
        carry = self._recorder.carry
        if state is not None and state.full:
            # A reset: every row is sent, whatever the ledgers and the state say.
            known = carried_known = 0
        sent = self._sent
        unchanged = self._unchanged
        quiet = 0
        for batch in self._batches():
            if not batch:
                yield None
                continue
            applied, failing = state.lookup(_keys(batch)) if state is not None else ({}, set())
            to_send: list[Request] = []
            for row, mapped, fp in batch:
                if self._stopping():
                    break
                key = mapped.key
                sendable = type(mapped) is Request
                # A row of a key that an earlier row of this run was sent for must go out too:
                # whatever the ledger or the state knew of it, the earlier value is live now.
                settled = not (sendable and key and key in sent)
                if row < known and codes[row]:
                    if fps[row] == fp:
                        if done[row] and settled:
                            self.rows_read += 1
                            self.already_done += 1
                            if state is not None and codes[row] == OK_CODE:
                                # The state may lag the ledger after a crash: catch it up.
                                state.record(RowResult(row, mapped.line, key, Status.OK, fp=fp))
                            quiet += 1
                            continue
                    else:
                        self.changed += 1
                elif row < carried_known and carried_codes[row]:
                    if carried_fps[row] != fp:
                        self.changed += 1
                    elif carried_codes[row] == OK_CODE and sendable and settled:
                        # The earlier ledger (input since changed) proved this very request applied.
                        self.rows_read += 1
                        self.already_done += 1
                        carry(RowResult(row, mapped.line, key, Status.OK, fp=fp))
                        quiet += 1
                        continue
                if sendable and settled and unchanged is not None and unchanged(row):
                    # --only-changed: the live workload already holds what this row would set.
                    self.rows_read += 1
                    record(RowResult(row, mapped.line, key, Status.UNCHANGED, fp=fp))
                    quiet += 1
                    continue
                if sendable and state is not None:
                    last = applied.get(key)
                    if last == fp and settled and key not in failing:
                        self.rows_read += 1
                        record(RowResult(row, mapped.line, key, Status.UNCHANGED, fp=fp))
                        quiet += 1
                        continue
                    if last is not None:
                        self.changed += 1
                if self._budget is not None:
                    if self._budget == 0:
                        self.limited = True
                        break
                    self._budget -= 1
                self.rows_read += 1
                if sendable:
                    if key:
                        sent.add(key)
                    to_send.append(mapped)  # type: ignore[arg-type]
                else:
                    assert isinstance(mapped, Rejected)
                    status = Status(mapped.status)
                    record(RowResult(row, mapped.line, key, status, None, 0, mapped.reason, None, fp))
            if to_send:
                quiet = 0
                if state is not None:
                    # Before they go: a key whose answer never comes (kill -9) is resent next time.
                    state.intend([r.key for r in to_send])
                for request in to_send:
                    if self._stopping():
                        return
                    yield request
            elif quiet >= _BREATHE:
                quiet = 0
                yield None
            if self.limited or self._stopping():
                return

    def _batches(self) -> Iterator[list[tuple[int, Request | Rejected, int]]]:
        """Mapped and fingerprinted records, ``BATCH`` at a time; a broken input ends them."""
        mapper_map = self._mapper.map
        prefix = self._prefix
        shard, shards = self._shard or (0, 1)
        batch: list[tuple[int, Request | Rejected, int]] = []
        size = BATCH if self._state is None else STATE_BATCH
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
                if len(batch) >= size:
                    yield batch
                    batch = []
        except InputError as exc:
            # The file broke off (truncated gzip): the rows read so far still count.
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


def _keys(batch: list[tuple[int, Request | Rejected, int]]) -> list[str]:
    return [mapped.key for _, mapped, _ in batch if type(mapped) is Request and mapped.key]
