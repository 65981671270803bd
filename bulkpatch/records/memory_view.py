"""Reading the memory for people: ``bulkpatch state FILE`` and ``state FILE --gone``.

Opened read-only and never changed (a database of another program is refused, not touched).
Every value is checked as it is read: a hand-edited file gives a one-line error, not a trace.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from bulkpatch.errors import ConfigError
from bulkpatch.records.memory_repair import previous_run

_RUN_FIELDS = (
    "id", "target", "input", "started", "ended", "outcome", "complete",
    "rows", "sent", "requests", "ok", "failed", "invalid", "skipped", "unchanged", "gone",
)  # fmt: skip


def describe(path: str, *, failing_shown: int = 20) -> dict[str, Any]:
    """Targets (keys applied, failing, gone), the last ten runs, the keys failing now."""
    with _open(path) as db:
        targets = dict(db.execute("SELECT id, target FROM targets").fetchall())
        runs = [
            dict(zip(_RUN_FIELDS, (*r[:1], targets.get(r[1], "?"), *r[2:]), strict=True))
            for r in db.execute(f"SELECT {', '.join(_RUN_FIELDS)} FROM runs ORDER BY id DESC LIMIT 10")
        ]
        summary = []
        for target_id, text in sorted(targets.items()):
            applied, failing = db.execute(
                "SELECT count(fp), count(status) FROM keys WHERE target = ?", (target_id,)
            ).fetchone()
            summary.append(
                {"target": text, "applied": applied, "failing": failing, "gone": len(_gone(db, target_id))}
            )
        failing_keys = [
            dict(zip(("target", "key", "status", "http_status", "error", "failed_at"), row, strict=True))
            for row in db.execute(
                "SELECT t.target, k.key, k.status, k.http_status, k.error, k.failed_at FROM keys k"
                " JOIN targets t ON t.id = k.target WHERE k.status IS NOT NULL"
                " ORDER BY k.failed_at DESC LIMIT ?",
                (min(failing_shown, 1 << 31),),
            )
        ]
    return {"targets": summary, "runs": runs, "failing": failing_keys}


def gone(path: str) -> list[dict[str, Any]]:
    """Keys the latest complete run of an input no longer had, though its previous one did (the
    source deleted them); per target and input."""
    with _open(path) as db:
        out = []
        for target_id, text in db.execute("SELECT id, target FROM targets ORDER BY id").fetchall():
            out += [{"target": text, **g} for g in _gone(db, target_id)]
    return out


def _gone(db: sqlite3.Connection, target: int) -> list[dict[str, Any]]:
    latest_runs = db.execute(
        "SELECT input, max(id) FROM runs WHERE target = ? AND complete = 1 GROUP BY input", (target,)
    ).fetchall()
    found = []
    for source, latest in latest_runs:
        prev = previous_run(db, target, latest)
        if prev is None:
            continue
        found += [
            {"key": key, "input": source, "last_seen_run": seen, "applied_at": at}
            for key, seen, at in db.execute(
                "SELECT key, last_seen, applied_at FROM keys WHERE target = ?"
                " AND last_seen >= ? AND last_seen < ? ORDER BY key",
                (target, prev, latest),
            )
        ]
    return found


class _open:  # noqa: N801 - used as a context manager, like open()
    """The memory opened read-only; a file that is not one is one ``ConfigError``."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise ConfigError(f"no memory database at {path!r}")
        self._path = path
        kind = None
        for mode in ("mode=ro", "immutable=1"):  # immutable: a read-only mount, where WAL cannot open
            try:
                self._db = sqlite3.connect(f"file:{path}?{mode}", uri=True)
                kind = self._db.execute("SELECT value FROM meta WHERE name = 'kind'").fetchone()
                break
            except sqlite3.OperationalError as exc:
                self._close()
                if mode != "mode=ro" or "no such table" in str(exc):
                    raise ConfigError(_why(path, exc)) from None
            except sqlite3.Error as exc:
                self._close()
                raise ConfigError(_why(path, exc)) from None
        if kind is None or kind[0] != "bulkpatch memory":
            self._close()
            raise ConfigError(f"{path} is not a bulkpatch memory database")

    def __enter__(self) -> sqlite3.Connection:
        return self._db

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._close()
        if isinstance(exc, sqlite3.Error):
            raise ConfigError(_why(self._path, exc)) from None

    def _close(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()
            del self._db


def _why(path: str, exc: sqlite3.Error) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "no such table" in text:
        return f"{path} is not a bulkpatch memory database"
    if "unable to open" in text or "readonly" in text or "locked" in text:
        return f"cannot read the memory {path}: {text}"
    return f"{path} is not a bulkpatch memory database: {text}"
