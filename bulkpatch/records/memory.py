"""The memory: what was last applied to each target and key, by every run, in one SQLite file.

One question decides whether a row may be skipped: *is the last request applied (answered 2xx)
to this target and key this very request, with nothing recorded for the key since?* Every run
records here — with or without ``--state``, whatever the input is called — so a hotfix from
another file, a rollback snapshot or a later row of an earlier run all void the proof of an
older request. The file is ``--state FILE``, or ``$BULKPATCH_STATE``, or ``bulkpatch-memory.db``
beside the ledger; users can query it with ``sqlite3`` (WAL mode).

Per key it keeps the fingerprint of the last request answered 2xx (``fp``, ``applied_at``,
``applied_run``: these change only on a 2xx), the status of a later outcome that was not a 2xx
(``failed``, ``invalid``, or ``pending``: sent, no answer recorded), and ``last_seen``, the last
run whose input had the key (what ``state --gone`` reads).

Crash safety. Outcomes are committed in batches (every ``commit_every`` seconds), each commit
noting how far the run's ledger was written. A run that dies (``kill -9``) leaves its ledger a
little ahead of the memory; the next run to open the memory replays that tail first, so an
answer written to the ledger is never lost and never sent again. Before a batch of requests goes
out, its keys are committed as one ``pending`` row; keys of a dead run's batch that got no answer
even in its ledger are marked ``pending``, which voids any proof: they were in flight, and may
have landed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bulkpatch.errors import ConfigError, LedgerError
from bulkpatch.records.ledger import RowResult, Status, iter_records_from
from bulkpatch.records.ledger_file import open_locked

#: the file name of the memory beside a ledger, when neither --state nor BULKPATCH_STATE names one
DEFAULT_NAME = "bulkpatch-memory.db"
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
    status TEXT,                     -- NULL, or what came after it: failed, invalid, pending
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
    pid INTEGER
);
"""
_TABLES = frozenset({"meta", "targets", "keys", "pending", "runs"})
#: tables of the sync state of bulkpatch 0.2: left as they are (its targets had another identity)
_OLD_TABLES = frozenset({"applied", "failing", "pending", "runs", "old_pending", "old_runs"})
_PENDING = "sent; no answer recorded (the run was stopped or killed): sent again next time"
_UPSERT_OK = (
    "INSERT INTO keys (target, key, fp, applied_at, applied_run, outcome_run, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target, key) DO UPDATE SET fp = excluded.fp,"
    " applied_at = excluded.applied_at, applied_run = excluded.applied_run, status = NULL,"
    " http_status = NULL, error = NULL, failed_at = NULL, outcome_run = excluded.outcome_run,"
    " last_seen = max(coalesce(last_seen, 0), excluded.last_seen)"
)
_UPSERT_FAILED = (
    "INSERT INTO keys (target, key, status, http_status, error, failed_at, outcome_run, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target, key) DO UPDATE SET status = excluded.status,"
    " http_status = excluded.http_status, error = excluded.error, failed_at = excluded.failed_at,"
    " outcome_run = excluded.outcome_run, last_seen = max(coalesce(last_seen, 0), excluded.last_seen)"
)


@dataclass(frozen=True)
class Target:
    """What a key is applied *to*: method, base URL, path template, extra headers, credentials.

    Headers and credentials enter only as digests keyed with the memory's own salt (``who``),
    never in clear: two tenants' tokens are two targets, and the file holds no secret.
    """

    method: str
    base_url: str
    path_template: str
    #: the extra headers (-H), name → value
    headers: Mapping[str, str]
    #: "client <id>" for OAuth client credentials, the static token itself, or ""
    credential: str = ""
    #: True when ``credential`` is a secret (a token), shown only as a keyed digest
    secret: bool = False

    def text(self, salt: bytes) -> str:
        out = f"{self.method.upper()} {self.base_url.rstrip('/')}{self.path_template}"
        if self.headers:
            pairs = sorted(f"{n.lower()}:{v}" for n, v in self.headers.items())
            out += f" headers:{_keyed(chr(10).join(pairs), salt)}"
        if self.credential:
            out += f" as:token-{_keyed(self.credential, salt)}" if self.secret else f" as:{self.credential}"
        return out


def _keyed(text: str, salt: bytes) -> str:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), key=salt, digest_size=8)
    return digest.hexdigest()


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
        self.input_name = input_name
        self.full = full
        self._commit_every = commit_every
        self._clock = clock
        #: called before each commit: flushes the ledger and says how many bytes it holds
        self.ledger_size: Callable[[], int] | None = None
        #: why the memory can no longer be written (disk full, I/O error), once it cannot
        self.error: LedgerError | None = None
        #: called once when a commit fails (the run stops on it, as for the ledger)
        self.on_error: Callable[[LedgerError], None] | None = None
        self._lock = _lock(path)
        self._db: sqlite3.Connection | None = None
        try:
            self._db = db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._check_ours()
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA synchronous=NORMAL")
            _upgrade(db)
            db.executescript(SCHEMA)
            salt = self._meta()
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
            self.target_text = target.text(salt)
            self.target = self._target_id(self.target_text)
            self._recover()
            self.run_id: int = (
                db.execute(
                    "INSERT INTO runs (target, input, full, started, pid) VALUES (?, ?, ?, ?, ?)",
                    (self.target, input_name, int(full), time.time(), os.getpid()),
                ).lastrowid
                or 0
            )
        except sqlite3.Error as exc:
            self._release()
            raise ConfigError(f"--state {path} is not a bulkpatch memory database: {_reason(exc)}") from None
        except BaseException:
            self._release()
            raise
        # Outcomes waiting for the next commit, the latest per key; keys seen since the last commit.
        self._ok: dict[str, tuple[Any, ...]] = {}
        self._failed: dict[str, tuple[Any, ...]] = {}
        self._seen: list[str] = []
        #: open pending batches: id → keys not answered yet; each key's open batches, in order
        self._open: dict[int, int] = {}
        self._batches_of: dict[str, list[int]] = {}
        self._closed: list[int] = []
        self._last_commit = clock()
        #: keys the latest complete run of this target had and this run's input has not (set by close)
        self.gone = 0

    def attach_ledger(self, path: str, size: Callable[[], int]) -> None:
        """Say where this run writes its outcomes, once it began writing them (after its start
        record): a crash from here on is replayed from that ledger by the next run."""
        assert self._db is not None
        if not os.path.isfile(path):
            return  # /dev/null and the like: nothing to read back; pending marks cover a crash
        self.ledger_size = size
        self._db.execute(
            "UPDATE runs SET ledger = ?, ledger_offset = ? WHERE id = ?",
            (os.path.abspath(path), size(), self.run_id),
        )

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[int, bool]]:
        """For a batch of keys: key → (fingerprint last applied or 0, True when an outcome that
        was not a 2xx came after it). Keys the memory does not know are left out. The keys count
        as seen by this run."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        self._seen.extend(wanted)
        assert self._db is not None
        marks = ",".join("?" * len(wanted))
        found: dict[str, tuple[int, bool]] = {}
        for key, fp, status in self._db.execute(
            f"SELECT key, fp, status FROM keys WHERE target = ? AND key IN ({marks})", (self.target, *wanted)
        ):
            found[key] = (int(fp, 16) if fp else 0, status is not None)
        return found

    def intend(self, keys: list[str]) -> None:
        """Commit ``keys`` as one pending row before their requests go out, with the outcomes
        noted since the last commit, in one transaction."""
        batch = self._write(keys)
        self._open[batch] = len(keys)
        for key in keys:
            self._batches_of.setdefault(key, []).append(batch)

    def record(self, result: RowResult) -> None:
        """Note a row's outcome; it reaches the database with the next commit."""
        status, key = result.status, result.key
        if not key:
            return
        if status is Status.OK:
            self._ok[key] = (f"{result.fp:016x}", time.time())
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
            self._open[batch] -= 1
            if not self._open[batch]:
                del self._open[batch]
                self._closed.append(batch)
        if self._clock() - self._last_commit >= self._commit_every:
            self.commit()

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
        if not (self._ok or self._failed or self._seen or self._closed or pending):
            return 0
        offset = self.ledger_size() if self.ledger_size is not None else None
        db, target, run = self._db, self.target, self.run_id
        assert db is not None
        batch = 0
        try:
            db.execute("BEGIN")
            if self._seen:
                _mark_seen(db, target, run, self._seen)
            if self._ok:
                db.executemany(
                    _UPSERT_OK, [(target, k, fp, at, run, run, run) for k, (fp, at) in self._ok.items()]
                )
            if self._failed:
                db.executemany(_UPSERT_FAILED, [(target, k, *v, run, run) for k, v in self._failed.items()])
            if self._closed:
                db.executemany("DELETE FROM pending WHERE id = ?", [(b,) for b in self._closed])
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
            self.error = LedgerError(f"cannot write the memory {self.path}: {_reason(exc)}")
            raise self.error from None
        self._ok.clear()
        self._failed.clear()
        self._seen.clear()
        self._closed.clear()
        return batch

    def _meta(self) -> bytes:
        """Mark a new file as ours (or check an old one is), and return its salt."""
        assert self._db is not None
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if not meta:
            salt = secrets.token_hex(16)
            self._db.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("kind", _MARK), ("version", _VERSION), ("salt", salt)]
            )
            return bytes.fromhex(salt)
        if meta.get("kind") != _MARK or not meta.get("salt"):
            raise ConfigError(
                f"--state {self.path} is an SQLite database of something else; choose another file"
            )
        return bytes.fromhex(meta["salt"])

    def _target_id(self, text: str) -> int:
        assert self._db is not None
        self._db.execute("INSERT OR IGNORE INTO targets (target) VALUES (?)", (text,))
        (found,) = self._db.execute("SELECT id FROM targets WHERE target = ?", (text,)).fetchone()
        return int(found)

    def _recover(self) -> None:
        """Runs of this target that died: replay what their ledgers hold beyond the memory. Then
        keys of pending batches (of a dead or stopped run) that got no answer even there are
        marked ``pending``: their requests may have landed."""
        db, target = self._db, self.target
        assert db is not None
        dead = db.execute(
            "SELECT id, ledger, ledger_offset FROM runs WHERE target = ? AND ended IS NULL", (target,)
        ).fetchall()
        pending = db.execute("SELECT id, run_id, keys FROM pending WHERE target = ?", (target,)).fetchall()
        if not dead and not pending:
            return
        now = time.time()
        db.execute("BEGIN")
        for run, ledger, offset in dead:
            if ledger and offset is not None:
                _replay(db, target, run, ledger, offset)
            db.execute("UPDATE runs SET ended = ?, outcome = 'died' WHERE id = ?", (now, run))
        for batch, run, text in pending:
            keys = list(dict.fromkeys(orjson.loads(text)))
            marks = ",".join("?" * len(keys))
            answered = {
                k
                for (k,) in db.execute(
                    f"SELECT key FROM keys WHERE target = ? AND outcome_run >= ? AND key IN ({marks})",
                    (target, run, *keys),
                )
            }
            lost = [(target, k, "pending", None, _PENDING, now, run, run) for k in keys if k not in answered]
            db.executemany(_UPSERT_FAILED, lost)
            db.execute("DELETE FROM pending WHERE id = ?", (batch,))
        db.execute("COMMIT")

    def _check_ours(self) -> None:
        """Refuse a database that holds tables of some other program (it would be changed)."""
        assert self._db is not None
        tables = {n for (n,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        foreign = tables - _TABLES - _OLD_TABLES
        if foreign or (tables and "meta" not in tables and not tables & _OLD_TABLES):
            raise ConfigError(
                f"--state {self.path} is an SQLite database of something else (tables: "
                f"{', '.join(sorted(foreign or tables)[:5])}); choose another file"
            )

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
            self._write(None)
            if outcome is not None:
                assert self._db is not None
                if complete:
                    self.gone = _count_gone(self._db, self.target, self.run_id)
                c = {**(counts or {}), "gone": self.gone}
                names = (
                    "rows",
                    "sent",
                    "requests",
                    "ok",
                    "failed",
                    "invalid",
                    "skipped",
                    "unchanged",
                    "gone",
                )
                sets = ", ".join(f"{n} = ?" for n in names)
                self._db.execute(
                    f"UPDATE runs SET ended = ?, outcome = ?, complete = ?, {sets} WHERE id = ?",
                    (time.time(), outcome, int(complete), *(c.get(n, 0) for n in names), self.run_id),
                )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the memory {self.path}: {_reason(exc)}") from None
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


def _mark_seen(db: sqlite3.Connection, target: int, run: int, keys: list[str]) -> None:
    for at in range(0, len(keys), 500):
        part = keys[at : at + 500]
        db.execute(
            f"UPDATE keys SET last_seen = ? WHERE target = ? AND key IN ({','.join('?' * len(part))})",
            (run, target, *part),
        )


def _replay(db: sqlite3.Connection, target: int, run: int, ledger: str, offset: int) -> None:
    """Write into the memory the outcomes a dead run's ledger holds past ``offset``."""
    try:
        records = iter_records_from(ledger, offset)
        for data in records:
            kind = data.get("type")
            if kind == "run" and data.get("event") == "start":
                break  # a later run of the same ledger: its rows are its own
            result = RowResult.from_json(data) if kind == "row" else None
            if result is None or not result.key:
                continue
            at = data.get("ts") if isinstance(data.get("ts"), (int, float)) else time.time()
            if result.status is Status.OK:
                db.execute(_UPSERT_OK, (target, result.key, f"{result.fp:016x}", at, run, run, run))
            elif result.status in (Status.FAILED, Status.INVALID):
                row = (result.status.value, result.http_status, result.error, at)
                db.execute(_UPSERT_FAILED, (target, result.key, *row, run, run))
    except OSError:
        return  # the ledger is gone: its pending keys are sent again, which is safe


def _count_gone(db: sqlite3.Connection, target: int, run: int) -> int:
    """Keys the previous complete run of this target had and this one did not."""
    (count,) = db.execute(
        "SELECT count(*) FROM keys WHERE target = ? AND coalesce(last_seen, 0) < ?"
        " AND coalesce(last_seen, 0) >= coalesce((SELECT max(id) FROM runs WHERE target = ? AND complete = 1"
        " AND id < ?), 1)",
        (target, run, target, run),
    ).fetchone()
    return int(count)


def _lock(path: str) -> int:
    """One run at a time per memory file."""
    return open_locked(path, os.O_RDWR, "memory", lambda: _holder(path))


def _holder(path: str) -> str:
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


def _upgrade(db: sqlite3.Connection) -> None:
    """A sync state of bulkpatch 0.2: keep its tables under other names (its targets had another
    identity, so its rows prove nothing now: the first run sends every row once)."""
    tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "applied" in tables and "meta" not in tables:
        for old in ("pending", "runs"):
            if old in tables:
                db.execute(f"ALTER TABLE {old} RENAME TO old_{old}")


def _reason(exc: sqlite3.Error) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
