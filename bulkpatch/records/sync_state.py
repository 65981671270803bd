"""Sync state: what was last applied per target and key, so a nightly run sends only changes.

An SQLite database (standard library, WAL) that users can query. Per *target* (base URL, method
and path template) and key it keeps the fingerprint of the last request answered 2xx; it also
keeps the keys whose last row failed or was invalid, and one line per run. A row whose request
equals the last one applied to its key is not sent (``unchanged``); a key that failed before is
always sent again, with the input's current values, so a failure heals on the next night.

It never claims a request applied that was not answered 2xx. Before a batch of requests goes
out, its keys are committed as one ``pending`` row; the row goes once every key of it has its
answer written. A run that finds pending rows (the last one was killed or stopped mid-batch)
marks their keys failing with status ``pending``: each is sent again, even if its next request
equals the last one applied, since the lost request may have landed. Answers are committed in batches (every
``commit_every`` seconds), so after ``kill -9`` the state can only be *behind*; the ledger still
knows those rows, and the next run copies what the ledger vouches for into the state.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from bulkpatch.errors import ConfigError
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.resume import open_locked

SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (
    target TEXT NOT NULL, key TEXT NOT NULL,
    fp TEXT NOT NULL,            -- fingerprint of the last request answered 2xx (16 hex digits)
    applied_at REAL NOT NULL,    -- Unix time of that answer
    run_id INTEGER NOT NULL,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failing (
    target TEXT NOT NULL, key TEXT NOT NULL,
    status TEXT NOT NULL,        -- failed, invalid, or pending (sent, no answer recorded: resent)
    http_status INTEGER, error TEXT,
    failed_at REAL NOT NULL, run_id INTEGER NOT NULL, row INTEGER, input TEXT,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, target TEXT NOT NULL, run_id INTEGER NOT NULL,
    keys TEXT NOT NULL           -- a JSON array: keys of a batch sent, not all answered yet
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, target TEXT NOT NULL, input TEXT NOT NULL, full INTEGER NOT NULL,
    started REAL NOT NULL, ended REAL,   -- ended NULL: the run is going on, or died
    outcome TEXT,                        -- finished, interrupted, stopped
    rows INTEGER, sent INTEGER, requests INTEGER,
    ok INTEGER, failed INTEGER, invalid INTEGER, skipped INTEGER, unchanged INTEGER
);
"""


_TABLES = frozenset({"applied", "failing", "pending", "runs"})
_SET_FAILING = "INSERT OR REPLACE INTO failing VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_PENDING = "sent; no answer recorded (the run was stopped or killed): sent again next time"


def target_of(base_url: str, method: str, path_template: str) -> str:
    """What a key is applied *to*: ``PATCH https://eu2-cloud.acronis.com/api/…/{workload_id}``."""
    return f"{method.upper()} {base_url.rstrip('/')}{path_template}"


class SyncState:
    """One run's view of the state database; ``close`` it (it commits and releases the lock)."""

    def __init__(
        self,
        path: str,
        target: str,
        *,
        input_name: str,
        full: bool = False,
        commit_every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.target = target
        self.input_name = input_name
        self.full = full
        self._commit_every = commit_every
        self._clock = clock
        self._lock = _lock(path)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._check_ours()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        except sqlite3.DatabaseError as exc:
            os.close(self._lock)
            raise ConfigError(f"--state {path} is not a bulkpatch state database: {exc}") from None
        except ConfigError:
            os.close(self._lock)
            raise
        self.run_id: int = (
            self._db.execute(
                "INSERT INTO runs (target, input, full, started) VALUES (?, ?, ?, ?)",
                (target, input_name, int(full), time.time()),
            ).lastrowid
            or 0
        )
        self._adopt_pending()
        # Outcomes waiting for the next commit, the latest per key.
        self._applied: dict[str, int] = {}
        self._failing: dict[str, tuple[Any, ...]] = {}
        self._cleared: set[str] = set()
        #: keys known to be in ``failing`` (an answer must clear them)
        self._failing_known: set[str] = set()
        #: open pending batches: id -> keys not answered yet; and each key's open batches, in order
        self._open: dict[int, int] = {}
        self._batches_of: dict[str, list[int]] = {}
        self._closed: list[int] = []
        self._last_commit = clock()

    def lookup(self, keys: Iterable[str]) -> tuple[dict[str, int], set[str]]:
        """For a batch of keys: the fingerprints last applied, and the keys failing now."""
        wanted = list(dict.fromkeys(keys))
        applied: dict[str, int] = {}
        failing: set[str] = set()
        if not wanted:
            return applied, failing
        marks = ",".join("?" * len(wanted))
        if not self.full:
            for key, fp in self._db.execute(
                f"SELECT key, fp FROM applied WHERE target = ? AND key IN ({marks})",
                (self.target, *wanted),
            ):
                applied[key] = int(fp, 16)
        for (key,) in self._db.execute(
            f"SELECT key FROM failing WHERE target = ? AND key IN ({marks})",
            (self.target, *wanted),
        ):
            failing.add(key)
        self._failing_known |= failing
        return applied, failing

    def intend(self, keys: list[str]) -> None:
        """Commit ``keys`` as one pending row before their requests go out (see the module
        docstring), with the answers noted since the last commit, in one transaction."""
        batch = self._write(keys)
        self._open[batch] = len(keys)
        for key in keys:
            self._batches_of.setdefault(key, []).append(batch)

    def record(self, result: RowResult) -> None:
        """Note a row's outcome; it reaches the database with the next commit."""
        status = result.status
        key = result.key
        if status is Status.OK:
            self._applied[key] = result.fp
            if key in self._failing_known:
                self._failing.pop(key, None)
                self._cleared.add(key)
        elif status is Status.FAILED or (status is Status.INVALID and key):
            error = result.error
            row = (self.target, key, status.value, result.http_status, error, time.time(), self.run_id)
            self._failing[key] = (*row, result.row, self.input_name)
            self._failing_known.add(key)
            self._cleared.discard(key)
        else:
            return
        # A row sent by this run closes its place in a pending batch (catch-ups from the ledger and
        # rows never sent were in none).
        batches = self._batches_of.get(key) if result.attempts else None
        if batches:
            batch = batches.pop(0)
            if not batches:
                del self._batches_of[key]
            self._open[batch] -= 1
            if not self._open[batch]:
                del self._open[batch]
                self._closed.append(batch)
        if self._clock() - self._last_commit >= self._commit_every:
            self.commit()

    def commit(self) -> None:
        """Write the answers noted since the last commit."""
        self._write(None)

    def _write(self, pending: list[str] | None) -> int:
        """One transaction: the answers noted, then (given) a new pending row; its id, or 0."""
        self._last_commit = self._clock()
        if not (self._applied or self._failing or self._cleared or self._closed or pending):
            return 0
        db = self._db
        now, target, run = time.time(), self.target, self.run_id
        db.execute("BEGIN")
        if self._applied:
            db.executemany(
                "INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?, ?)",
                [(target, key, f"{fp:016x}", now, run) for key, fp in self._applied.items()],
            )
        if self._cleared:
            db.executemany(
                "DELETE FROM failing WHERE target = ? AND key = ?", [(target, k) for k in self._cleared]
            )
        if self._failing:
            db.executemany(
                "INSERT OR REPLACE INTO failing VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._failing.values()
            )
        if self._closed:
            db.executemany("DELETE FROM pending WHERE id = ?", [(batch,) for batch in self._closed])
        batch = 0
        if pending:
            keys = orjson.dumps(pending).decode()
            batch = (
                db.execute(
                    "INSERT INTO pending (target, run_id, keys) VALUES (?, ?, ?)", (target, run, keys)
                ).lastrowid
                or 0
            )
        db.execute("COMMIT")
        self._applied.clear()
        self._cleared.clear()
        self._failing.clear()
        self._closed.clear()
        return batch

    def _adopt_pending(self) -> None:
        """Keys of batches an earlier run sent but did not see answered: failing, as ``pending``.

        A key whose answer that run did write (applied or failed, by the same run) is not adopted.
        """
        db, now = self._db, time.time()
        rows = db.execute("SELECT id, run_id, keys FROM pending WHERE target = ?", (self.target,)).fetchall()
        if not rows:
            return
        db.execute("BEGIN")
        for batch, run, text in rows:
            keys = list(dict.fromkeys(orjson.loads(text)))
            marks = ",".join("?" * len(keys))
            answered = {
                key
                for table in ("applied", "failing")
                for (key,) in db.execute(
                    f"SELECT key FROM {table} WHERE target = ? AND run_id = ? AND key IN ({marks})",
                    (self.target, run, *keys),
                )
            }
            lost = [
                (self.target, key, _PENDING, now, self.run_id, self.input_name)
                for key in keys
                if key not in answered
            ]
            db.executemany(
                "INSERT OR REPLACE INTO failing VALUES (?, ?, 'pending', NULL, ?, ?, ?, NULL, ?)", lost
            )
            db.execute("DELETE FROM pending WHERE id = ?", (batch,))
        db.execute("COMMIT")

    def _check_ours(self) -> None:
        """Refuse a database that holds tables of some other program (it would be changed)."""
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not tables <= _TABLES:
            self._db.close()
            raise ConfigError(
                f"--state {self.path} is an SQLite database of something else (tables: "
                f"{', '.join(sorted(tables - _TABLES)[:5])}); choose another file"
            )

    def close(self, outcome: str | None = None, counts: dict[str, int] | None = None) -> None:
        """Commit, write the run's line (when it ended at all), release the database."""
        if self._lock < 0:
            return
        try:
            self.commit()
            if outcome is not None:
                c = counts or {}
                self._db.execute(
                    "UPDATE runs SET ended = ?, outcome = ?, rows = ?, sent = ?, requests = ?, ok = ?,"
                    " failed = ?, invalid = ?, skipped = ?, unchanged = ? WHERE id = ?",
                    (
                        time.time(),
                        outcome,
                        *(c.get(k, 0) for k in ("rows", "sent", "requests", "ok", "failed", "invalid")),
                        *(c.get(k, 0) for k in ("skipped", "unchanged")),
                        self.run_id,
                    ),
                )
        finally:
            self._db.close()
            os.close(self._lock)
            self._lock = -1


def _lock(path: str) -> int:
    """One run at a time per state file."""
    return open_locked(path, os.O_RDWR, "--state", lambda: "another bulkpatch run")


def describe(path: str, *, failing_shown: int = 20) -> dict[str, Any]:
    """What ``bulkpatch state FILE`` prints: targets, recent runs, failing keys."""
    if not os.path.isfile(path):
        raise ConfigError(f"no state database at {path!r}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            runs = [
                dict(zip([c[0] for c in cursor.description], row, strict=True))
                for cursor in [db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 10")]
                for row in cursor.fetchall()
            ]
            applied = dict(db.execute("SELECT target, count(*) FROM applied GROUP BY target").fetchall())
            failing_counts = dict(
                db.execute("SELECT target, count(*) FROM failing GROUP BY target").fetchall()
            )
            failing = [
                dict(zip(("target", "key", "status", "http_status", "error", "failed_at"), row, strict=True))
                for row in db.execute(
                    "SELECT target, key, status, http_status, error, failed_at FROM failing"
                    " ORDER BY failed_at DESC LIMIT ?",
                    (failing_shown,),
                )
            ]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path} is not a bulkpatch state database: {exc}") from None
    return {"runs": runs, "applied": applied, "failing_counts": failing_counts, "failing": failing}
