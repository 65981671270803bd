"""The memory: what was last applied to each target and key, by every run, in one SQLite file.

It answers the one question of ``engine/truth.py`` for every run, with or without ``--state``,
whatever the input is called. The file is ``--state FILE``, or ``$BULKPATCH_STATE``, or
``bulkpatch-memory.db`` beside the ledger; users can query it with ``sqlite3`` (WAL mode).

Per key it keeps the fingerprint of the last request answered 2xx (``fp``, ``applied_at``,
``applied_run``: these change only on a 2xx), the status of a later outcome that was not a 2xx
(``failed``, ``invalid``, or ``pending``: sent, no answer recorded), and ``last_seen``, the last
run whose input had the key (what ``state --gone`` reads).

Outcomes are committed in batches (every ``commit_every`` seconds), each commit noting how far
the run's ledger was written and which rows of the batches sent are still unanswered; what a run
that dies leaves behind is repaired by the next one (``memory_repair.py``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from bulkpatch.errors import ConfigError, LedgerError
from bulkpatch.records import memory_repair as repair
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.target import Target

#: the file name of the memory beside a ledger, when neither --state nor BULKPATCH_STATE names one
DEFAULT_NAME = "bulkpatch-memory.db"
#: keys seen (their ``last_seen`` to write) that make a commit: at ~5 µs a key, short enough not
#: to keep the answers in flight waiting
_SEEN_PER_COMMIT = 2048


class Memory:
    """One run's view of the memory; ``close`` it (commits, releases the lock)."""

    def __init__(
        self,
        path: str,
        target: Target,
        *,
        input_name: str,
        full: bool = False,
        commit_every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._commit_every = commit_every
        self._clock = clock
        #: called before each commit: flushes the ledger and says how many bytes it holds
        self.ledger_size: Callable[[], int] | None = None
        #: why the memory can no longer be written (disk full, I/O error), once it cannot
        self.error: LedgerError | None = None
        #: called once when a commit fails (the run stops on it, as for the ledger)
        self.on_error: Callable[[LedgerError], None] | None = None
        self._lock = repair.lock(path)
        self._db: sqlite3.Connection | None = None
        try:
            self._db = db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            repair.check_ours(db, path)
            db.executescript("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA synchronous=NORMAL;")
            repair.upgrade(db)
            db.executescript(repair.SCHEMA)
            salt = repair.mark_ours(db, path)
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
            self.target = repair.target_id(db, target.text(salt))
            repair.recover(db)
            self.run_id: int = (
                db.execute(
                    "INSERT INTO runs (target, input, full, started, pid) VALUES (?, ?, ?, ?, ?)",
                    (self.target, input_name, int(full), time.time(), os.getpid()),
                ).lastrowid
                or 0
            )
        except sqlite3.Error as exc:
            self._release()
            raise ConfigError(
                f"--state {path} is not a bulkpatch memory database: {repair.reason(exc)}"
            ) from None
        except (ValueError, TypeError, OverflowError) as exc:  # a hand edit: a salt, an offset, keys
            self._release()
            raise ConfigError(
                f"the memory {path} is damaged ({exc}); move it away (without it every row is sent once)"
            ) from None
        except BaseException:
            self._release()
            raise
        # Outcomes waiting for the next commit, the latest per key; keys seen since the last commit.
        self._ok: dict[str, tuple[Any, ...]] = {}
        self._failed: dict[str, tuple[Any, ...]] = {}
        self._seen: list[str] = []
        #: open pending batches: id → keys not answered yet; each key's open batches, in order
        self._remaining: dict[int, list[str]] = {}
        self._batches_of: dict[str, list[int]] = {}
        #: batches answered in full (their row goes), and batches whose remaining keys changed
        self._closed: list[int] = []
        self._dirty: set[int] = set()
        self._last_commit = clock()
        self._ledger_runs: set[int] = set()
        self._used = False  # set by the first lookup
        self.gone = 0  # keys the last complete run had and this input has not (set by close)

    def attach_ledger(self, path: str, size: Callable[[], int], *, same_input: bool = False) -> None:
        """Say where this run writes its outcomes, once it began writing them (after its start
        record): a crash from here on is replayed from that ledger by the next run. With
        ``same_input`` (the ledger is bound to its input's content), what earlier runs of this
        very ledger applied is told apart in ``lookup``."""
        assert self._db is not None
        if not os.path.isfile(path):
            return  # /dev/null and the like: nothing to read back; pending marks cover a crash
        ledger_id = repair.file_id(path)
        if same_input:
            runs = self._db.execute("SELECT id FROM runs WHERE ledger_id = ?", (ledger_id,))
            self._ledger_runs = {run for (run,) in runs}
        self.ledger_size = size
        self._db.execute(
            "UPDATE runs SET ledger = ?, ledger_offset = ?, ledger_id = ? WHERE id = ?",
            (os.path.abspath(path), size(), ledger_id, self.run_id),
        )

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[int, bool, int]]:
        """For a batch of keys: key → (fingerprint last applied or 0, True when an outcome that
        was not a 2xx came after it, and the row it was for when a run of this very ledger
        applied it, else 0). Keys the memory does not know are left out (an outcome of this run
        will write them); those it knows count as seen by this run."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        self._used = True
        if len(self._seen) >= _SEEN_PER_COMMIT:
            self.commit()  # a small commit now, not one that holds the event loop for long later
        assert self._db is not None
        marks = ",".join("?" * len(wanted))
        found: dict[str, tuple[int, bool, int]] = {}
        ours = self._ledger_runs
        for key, fp, status, run, row in self._db.execute(
            "SELECT key, fp, status, applied_run, applied_row FROM keys"
            f" WHERE target = ? AND key IN ({marks})",
            (self.target, *wanted),
        ):
            here = row if run in ours and type(row) is int else 0
            found[key] = (repair.stored_fp(fp), status is not None, here)
        self._seen.extend(found)
        return found

    def intend(self, keys: list[str]) -> None:
        """Commit ``keys`` as one pending row before their requests go out, with the outcomes
        noted since the last commit, in one transaction."""
        batch = self._write(keys)
        self._remaining[batch] = list(keys)
        for key in keys:
            self._batches_of.setdefault(key, []).append(batch)

    def record(self, result: RowResult) -> None:
        """Note a row's outcome; it reaches the database with the next commit."""
        status, key = result.status, result.key
        if not key:
            return
        if status is Status.OK:
            self._ok[key] = (f"{result.fp:016x}", time.time(), result.row)
            self._failed.pop(key, None)
        elif status is Status.FAILED or status is Status.INVALID:
            self._failed[key] = (status.value, result.http_status, result.error, time.time())
            self._ok.pop(key, None)
        else:
            return
        # A row sent by this run closes its place in a pending batch.
        batches = self._batches_of.get(key) if result.attempts else None
        if batches:
            batch = batches.pop(0)
            if not batches:
                del self._batches_of[key]
            remaining = self._remaining[batch]
            remaining.remove(key)
            if remaining:
                self._dirty.add(batch)
            else:
                del self._remaining[batch]
                self._dirty.discard(batch)
                self._closed.append(batch)
        if self._clock() - self._last_commit >= self._commit_every:
            self.commit()

    def void(self, key: str) -> None:
        """Note that ``key``'s live value is not what the memory last applied (``--only-changed``
        saw it): its proof is void until a request is applied to it again."""
        self._failed[key] = (
            "drifted",
            None,
            "the live value differs from the last request applied",
            time.time(),
        )
        self._ok.pop(key, None)

    def commit(self) -> None:
        """Write the outcomes noted since the last commit; a failure goes to ``on_error``."""
        try:
            self._write(None)
        except LedgerError as exc:
            if self.on_error is None:
                raise
            self.on_error(exc)

    def _write(self, pending: list[str] | None) -> int:
        """One transaction: the outcomes noted, then (given) a new pending row; its id, or 0.
        Once a write failed, every later one raises the same error: nothing is half-known."""
        if self.error is not None:
            raise self.error
        self._last_commit = self._clock()
        if not (self._ok or self._failed or self._seen or self._closed or self._dirty or pending):
            return 0
        offset = self.ledger_size() if self.ledger_size is not None else None
        db, target, run = self._db, self.target, self.run_id
        assert db is not None
        batch = 0
        try:
            db.execute("BEGIN")
            if self._seen:
                repair.mark_seen(db, target, run, self._seen)
            if self._ok:
                db.executemany(
                    repair.UPSERT_OK,
                    [(target, k, fp, at, run, row, run, run) for k, (fp, at, row) in self._ok.items()],
                )
            if self._failed:
                db.executemany(
                    repair.UPSERT_FAILED, [(target, k, *v, run, run) for k, v in self._failed.items()]
                )
            if self._closed:
                db.executemany("DELETE FROM pending WHERE id = ?", [(b,) for b in self._closed])
            if self._dirty:
                # The rows of a batch still without an answer, key by key: what a crash leaves
                # unproved (a key's earlier row answered does not answer its later one).
                rows = [(orjson.dumps(self._remaining[b]).decode(), b) for b in self._dirty]
                db.executemany("UPDATE pending SET keys = ? WHERE id = ?", rows)
            if pending:
                keys = orjson.dumps(pending).decode()
                cursor = db.execute(
                    "INSERT INTO pending (target, run_id, keys) VALUES (?, ?, ?)", (target, run, keys)
                )
                batch = cursor.lastrowid or 0
            if offset is not None:
                db.execute("UPDATE runs SET ledger_offset = ? WHERE id = ?", (offset, run))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self.error = LedgerError(f"cannot write the memory {self.path}: {repair.reason(exc)}")
            raise self.error from None
        self._ok.clear()
        self._failed.clear()
        self._seen.clear()
        self._closed.clear()
        self._dirty.clear()
        return batch

    def close(
        self, outcome: str | None = None, counts: dict[str, int] | None = None, *, complete: bool = False
    ) -> None:
        """Commit, write the run's line (when it ended at all), release the database.

        Always releases, even when the commit fails; a failure is raised after that."""
        if self._lock < 0:
            return
        try:
            if self.error is not None:
                return  # reported already; the ledger still holds what the memory missed
            assert self._db is not None
            if outcome is None and self.ledger_size is None and not self._used:
                # Refused before it did anything (a busy ledger): no phantom run in ``state``.
                self._db.execute("DELETE FROM runs WHERE id = ?", (self.run_id,))
                return
            self._write(None)
            if outcome is not None:
                repair.end_run(self._db, self.run_id, outcome, counts or {}, complete)
                if complete:  # after its line: what it is compared with depends on its rows read
                    self.gone = repair.count_gone(self._db, self.target, self.run_id)
                    self._db.execute("UPDATE runs SET gone = ? WHERE id = ?", (self.gone, self.run_id))
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the memory {self.path}: {repair.reason(exc)}") from None
        finally:
            self._release()

    def _release(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1
