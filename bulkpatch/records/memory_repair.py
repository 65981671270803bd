"""The memory's schema, and what a run does to it before anything else: refuse a database that is
not a memory, upgrade an old one, take the lock, and repair what a dead run left.

Repair: a run that died (``kill -9``) committed its outcomes up to some offset of its ledger; the
ledger's tail beyond it is replayed here, so an answer written down is never lost. Then the keys
of pending batches (of a dead or stopped run) that got no answer even there are marked
``pending``: their requests may have landed, so nothing about those keys is proved any more.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import time
from collections import Counter

import orjson

from bulkpatch.errors import ConfigError
from bulkpatch.records.ledger import RowResult, Status, iter_records_from
from bulkpatch.records.ledger_file import open_locked

_MARK = "bulkpatch memory"
_VERSION = "3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS targets (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL UNIQUE      -- METHOD base-URL path-template [headers digest] [as credential]
);
CREATE TABLE IF NOT EXISTS keys (
    target INTEGER NOT NULL, key TEXT NOT NULL,
    fp TEXT,                         -- fingerprint of the last request answered 2xx (16 hex digits)
    applied_at REAL,                 -- Unix time of that answer
    applied_run INTEGER,             -- the run that got it
    applied_row INTEGER,             -- the row of that run's input it was for
    status TEXT,                     -- NULL, or what came after it: failed, invalid, pending, drifted
    http_status INTEGER, error TEXT, failed_at REAL,
    outcome_run INTEGER,             -- the run of the latest outcome (2xx or not)
    last_seen INTEGER,               -- the last run whose input had this key
    PRIMARY KEY (target, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, target INTEGER NOT NULL, run_id INTEGER NOT NULL,
    keys TEXT NOT NULL               -- a JSON array: keys of a batch sent, not all answered yet
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, target INTEGER NOT NULL, input TEXT NOT NULL, full INTEGER NOT NULL,
    started REAL NOT NULL, ended REAL,   -- ended NULL: the run is going on, or died
    outcome TEXT,                        -- finished, interrupted, stopped, died
    complete INTEGER NOT NULL DEFAULT 0, -- 1: it read its whole input (what --gone compares with)
    rows INTEGER, sent INTEGER, requests INTEGER,
    ok INTEGER, failed INTEGER, invalid INTEGER, skipped INTEGER, unchanged INTEGER, gone INTEGER,
    ledger TEXT, ledger_offset INTEGER,  -- the run's ledger, and how much of it is in this memory
    ledger_id TEXT,                      -- that file's device:inode (it may be renamed since)
    pid INTEGER
);
"""
_TABLES = frozenset({"meta", "targets", "keys", "pending", "runs"})
#: tables of the sync state of bulkpatch 0.2: left as they are (its targets had another identity)
_OLD_TABLES = frozenset({"applied", "failing", "pending", "runs", "old_pending", "old_runs"})
PENDING = "sent; no answer recorded (the run was stopped or killed): sent again next time"
UPSERT_OK = (
    "INSERT INTO keys (target, key, fp, applied_at, applied_run, applied_row, outcome_run, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target, key) DO UPDATE SET fp = excluded.fp,"
    " applied_at = excluded.applied_at, applied_run = excluded.applied_run,"
    " applied_row = excluded.applied_row, status = NULL,"
    " http_status = NULL, error = NULL, failed_at = NULL, outcome_run = excluded.outcome_run,"
    " last_seen = max(coalesce(last_seen, 0), excluded.last_seen)"
)
UPSERT_FAILED = (
    "INSERT INTO keys (target, key, status, http_status, error, failed_at, outcome_run, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target, key) DO UPDATE SET status = excluded.status,"
    " http_status = excluded.http_status, error = excluded.error, failed_at = excluded.failed_at,"
    " outcome_run = excluded.outcome_run, last_seen = max(coalesce(last_seen, 0), excluded.last_seen)"
)


def recover(db: sqlite3.Connection) -> None:
    """Runs that died (of any target: one run at a time holds the memory, so a run not ended is
    dead): replay what their ledgers hold beyond the memory. Then the keys of pending batches (of
    a dead or stopped run) that got no answer even there are marked ``pending``: their requests
    may have landed."""
    dead = db.execute(
        "SELECT id, target, ledger, ledger_offset, ledger_id FROM runs WHERE ended IS NULL"
    ).fetchall()
    pending = db.execute("SELECT id, target, run_id, keys FROM pending").fetchall()
    if not dead and not pending:
        return
    now = time.time()
    db.execute("BEGIN")
    answered: dict[int, Counter[str]] = {}
    for run, target, ledger, offset, ledger_id in dead:
        found = _ledger_file(ledger, ledger_id) if ledger and offset is not None else None
        if found is not None:
            answered[run] = replay(db, target, run, found, offset)
        db.execute("UPDATE runs SET ended = ?, outcome = 'died' WHERE id = ?", (now, run))
    for batch, target, run, text in sorted(pending):
        # The batch's rows still unanswered at the run's last commit, less the answers its ledger
        # got after that, oldest first: what is left was in flight.
        got = answered.get(run, Counter())
        lost: dict[str, None] = {}
        for key in orjson.loads(text):
            if got[key] > 0:
                got[key] -= 1
            else:
                lost[key] = None
        db.executemany(UPSERT_FAILED, [(target, k, "pending", None, PENDING, now, run, run) for k in lost])
        db.execute("DELETE FROM pending WHERE id = ?", (batch,))
    db.execute("COMMIT")


def file_id(path: str) -> str:
    """``device:inode`` of a file: the same after a rename (a ledger kept under a dated name)."""
    info = os.stat(path)
    return f"{info.st_dev}:{info.st_ino}"


def _ledger_file(path: str, wanted: str | None) -> str | None:
    """The ledger a dead run wrote: at ``path`` if that is still the same file, else the file of
    its folder that it was renamed to (the next input's run kept it under a dated name); None
    when it is gone (its pending keys are then all sent again, which is safe)."""
    with contextlib.suppress(OSError):
        if wanted is None or file_id(path) == wanted:
            return path
    folder = os.path.dirname(path) or "."
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                if entry.is_file() and file_id(entry.path) == wanted:
                    return entry.path
    return None


def check_ours(db: sqlite3.Connection, path: str) -> None:
    """Refuse a database that holds tables of some other program (it would be changed): only an
    empty file, a memory (its ``meta`` table) or the sync state of bulkpatch 0.2 (``applied`` and
    ``failing``) are ours."""
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    old = {"applied", "failing"} <= tables and "meta" not in tables
    ours = _TABLES | _OLD_TABLES if old else _TABLES
    if tables and (tables - ours or not (old or "meta" in tables)):
        raise ConfigError(
            f"--state {path} is an SQLite database of something else (tables: "
            f"{', '.join(sorted(tables - ours or tables)[:5])}); choose another file"
        )


def replay(db: sqlite3.Connection, target: int, run: int, ledger: str, offset: int) -> Counter[str]:
    """Write into the memory the outcomes a dead run's ledger holds past ``offset``; how many
    answers (to rows it sent) each key got there."""
    sent: Counter[str] = Counter()
    try:
        records = iter_records_from(ledger, offset)
        for data in records:
            kind = data.get("type")
            if kind == "run" and data.get("event") == "start":
                break  # a later run of the same ledger: its rows are its own
            result = RowResult.from_json(data) if kind == "row" else None
            if result is None or not result.key:
                continue
            if result.attempts:
                sent[result.key] += 1
            at = data.get("ts") if isinstance(data.get("ts"), (int, float)) else time.time()
            if result.status is Status.OK:
                db.execute(
                    UPSERT_OK, (target, result.key, f"{result.fp:016x}", at, run, result.row, run, run)
                )
            elif result.status in (Status.FAILED, Status.INVALID):
                row = (result.status.value, result.http_status, result.error, at)
                db.execute(UPSERT_FAILED, (target, result.key, *row, run, run))
    except OSError:
        pass  # the ledger is gone: its pending keys are sent again, which is safe
    return sent


def lock(path: str) -> int:
    """One run at a time per memory file."""
    return open_locked(path, os.O_RDWR, "memory", lambda: holder(path))


def holder(path: str) -> str:
    """Who holds the memory: the latest run that has not ended."""
    with contextlib.suppress(sqlite3.Error, TypeError, ValueError):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT pid, started FROM runs WHERE ended IS NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
        finally:
            db.close()
        if row is not None and isinstance(row[0], int):
            when = time.strftime("%H:%M:%S UTC", time.gmtime(float(row[1])))
            return f"another bulkpatch run (pid {row[0]}, started {when})"
    return "another bulkpatch run"


def upgrade(db: sqlite3.Connection) -> None:
    """A sync state of bulkpatch 0.2: keep its tables under other names (its targets had another
    identity, so its rows prove nothing now: the first run sends every row once)."""
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "applied" in tables and "meta" not in tables:
        for old in ("pending", "runs"):
            if old in tables:
                db.execute(f"ALTER TABLE {old} RENAME TO old_{old}")


def mark_ours(db: sqlite3.Connection, path: str) -> bytes:
    """Mark a new file as a memory (or check an old one is), and return its salt."""
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    if not meta:
        salt = secrets.token_hex(16)
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)", [("kind", _MARK), ("version", _VERSION), ("salt", salt)]
        )
        return bytes.fromhex(salt)
    if meta.get("kind") != _MARK or not meta.get("salt"):
        raise ConfigError(f"--state {path} is an SQLite database of something else; choose another file")
    if str(meta.get("version")) != _VERSION:
        raise ConfigError(f"--state {path} was written by another version of bulkpatch; choose another file")
    try:
        return bytes.fromhex(str(meta["salt"]))
    except ValueError:
        raise ValueError("its salt is not hexadecimal") from None


def target_id(db: sqlite3.Connection, text: str) -> int:
    db.execute("INSERT OR IGNORE INTO targets (target) VALUES (?)", (text,))
    (found,) = db.execute("SELECT id FROM targets WHERE target = ?", (text,)).fetchone()
    return int(found)


def count_gone(db: sqlite3.Connection, target: int, run: int) -> int:
    """Keys the previous complete run of this run's input had and this one did not."""
    prev = previous_run(db, target, run)
    if prev is None:
        return 0
    (count,) = db.execute(
        "SELECT count(*) FROM keys WHERE target = ? AND last_seen >= ? AND last_seen < ?", (target, prev, run)
    ).fetchone()
    return int(count)


def previous_run(db: sqlite3.Connection, target: int, run: int) -> int | None:
    """The complete run before ``run`` to compare it with for keys gone: of the same input (file
    name), else — a nightly export under a new name — the previous complete run of the target if
    ``run`` read at least half as many rows. A hotfix of one row is no export: keys it lacks are
    not gone."""
    (same,) = db.execute(
        "SELECT max(id) FROM runs WHERE target = ? AND complete = 1 AND id < ?"
        " AND input = (SELECT input FROM runs WHERE id = ?)",
        (target, run, run),
    ).fetchone()
    if isinstance(same, int):
        return same
    found = db.execute(
        "SELECT p.id FROM runs p, runs r WHERE r.id = ? AND p.target = ? AND p.complete = 1 AND p.id < ?"
        " AND coalesce(r.rows, 0) * 2 >= coalesce(p.rows, 0) ORDER BY p.id DESC LIMIT 1",
        (run, target, run),
    ).fetchone()
    return found[0] if found is not None and isinstance(found[0], int) else None


def mark_seen(db: sqlite3.Connection, target: int, run: int, keys: list[str]) -> None:
    for at in range(0, len(keys), 500):
        part = keys[at : at + 500]
        db.execute(
            f"UPDATE keys SET last_seen = ? WHERE target = ? AND key IN ({','.join('?' * len(part))})",
            (run, target, *part),
        )


def stored_fp(text: object) -> int:
    """A stored fingerprint; 0 (proves nothing) for one a hand edit broke."""
    try:
        return int(text, 16) if isinstance(text, str) and len(text) == 16 else 0
    except ValueError:
        return 0


def reason(exc: sqlite3.Error) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def end_run(db: sqlite3.Connection, run: int, outcome: str, counts: dict[str, int], complete: bool) -> None:
    """Write a run's line in ``runs``: how it ended and what it counted."""
    names = ("rows", "sent", "requests", "ok", "failed", "invalid", "skipped", "unchanged", "gone")
    sets = ", ".join(f"{n} = ?" for n in names)
    db.execute(
        f"UPDATE runs SET ended = ?, outcome = ?, complete = ?, {sets} WHERE id = ?",
        (time.time(), outcome, int(complete), *(counts.get(n, 0) for n in names), run),
    )
