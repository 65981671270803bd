"""Sync state: what was last applied per target and key, so a nightly run sends only changes.

An SQLite database (standard library, WAL) that users can query. Per *target* (base URL, method
and path template) and key it keeps the fingerprint of the last request answered 2xx; it also
keeps the keys whose last row failed or was invalid, and one line per run. A row whose request
equals the last one applied to its key is not sent (``unchanged``); a key that failed before is
always sent again, with the input's current values, so a failure heals on the next night.

It never claims a request applied that was not answered 2xx. Before a batch of requests goes
out, their keys are committed as ``pending`` (in ``failing``): a key whose answer never arrives
(``kill -9``, a stop) is sent again next time, even if its next request equals the last one
applied, since the lost one may have landed. Answers are committed in batches (every
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

from bulkpatch.errors import ConfigError
from bulkpatch.ledger import RowResult, Status
from bulkpatch.resume import open_locked

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
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, target TEXT NOT NULL, input TEXT NOT NULL, full INTEGER NOT NULL,
    started REAL NOT NULL, ended REAL,   -- ended NULL: the run is going on, or died
    outcome TEXT,                        -- finished, interrupted, stopped
    rows INTEGER, sent INTEGER, requests INTEGER,
    ok INTEGER, failed INTEGER, invalid INTEGER, skipped INTEGER, unchanged INTEGER
);
"""


_TABLES = frozenset({"applied", "failing", "runs"})
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
        # Outcomes waiting for the next commit, the latest per key.
        self._applied: dict[str, tuple[str, str, str, float, int]] = {}
        self._failing: dict[str, tuple[Any, ...]] = {}
        self._cleared: set[str] = set()
        self._last_commit = clock()
        self.input_name = input_name

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
        return applied, failing

    def intend(self, keys: list[str]) -> None:
        """Commit ``keys`` as pending before their requests go out (see the module docstring),
        with the answers noted since the last commit: one transaction, and the answers first, so
        that a buffered "clear" never erases a new pending mark."""
        now = time.time()
        self._write(
            [
                (self.target, key, "pending", None, _PENDING, now, self.run_id, None, self.input_name)
                for key in keys
            ]
        )

    def record(self, result: RowResult) -> None:
        """Note a row's outcome; it reaches the database with the next commit."""
        status = result.status
        key = result.key
        if status is Status.OK:
            self._applied[key] = (self.target, key, f"{result.fp:016x}", time.time(), self.run_id)
            self._failing.pop(key, None)
            self._cleared.add(key)
        elif status is Status.FAILED or (status is Status.INVALID and key):
            error = result.error
            row = (self.target, key, status.value, result.http_status, error, time.time(), self.run_id)
            self._failing[key] = (*row, result.row, self.input_name)
            self._cleared.discard(key)
        else:
            return
        if self._clock() - self._last_commit >= self._commit_every:
            self.commit()

    def commit(self) -> None:
        """Write the answers noted since the last commit."""
        self._write([])

    def _write(self, pending: list[tuple[Any, ...]]) -> None:
        self._last_commit = self._clock()
        if not (self._applied or self._failing or self._cleared or pending):
            return
        db = self._db
        db.execute("BEGIN")
        if self._applied:
            db.executemany("INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?, ?)", self._applied.values())
        if self._cleared:
            db.executemany(
                "DELETE FROM failing WHERE target = ? AND key = ?", [(self.target, k) for k in self._cleared]
            )
        failing = [*self._failing.values(), *pending]
        if failing:
            db.executemany("INSERT OR REPLACE INTO failing VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", failing)
        db.execute("COMMIT")
        self._applied.clear()
        self._cleared.clear()
        self._failing.clear()

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
