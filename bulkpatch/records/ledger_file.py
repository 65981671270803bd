"""Opening a ledger for a run: lock it, check it, keep an earlier input's ledger, prune old ones.

``open_ledger`` guards the file itself: it locks the ledger so that one run writes it at a time
(an OS lock, gone with the process, ``kill -9`` included), refuses to append to a file that is not
a ledger (a typo'd ``--ledger`` must not corrupt the input or anything else), and keeps an earlier
run's ledger under a dated name when the input at the same path has changed since — at most
``keep`` of them (``--keep-ledgers``), the oldest removed; only files that are bulkpatch ledgers
by name and by first line are ever removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bulkpatch.errors import ConfigError
from bulkpatch.records.ledger import LEDGER_VERSION, LedgerWriter, iter_records
from bulkpatch.records.resume import LedgerIndex
from bulkpatch.rows.reader import is_stream

#: archived ledgers kept per ledger by default
KEEP_LEDGERS = 7


@dataclass
class OpenLedger:
    """A ledger opened for a run: its writer, what it already holds, and what happened opening it."""

    writer: LedgerWriter
    index: LedgerIndex
    #: where an earlier run's ledger was kept, when the input had changed since
    archived: str | None = None
    #: True when the ledger is bound to its input's content (a regular file: another content at
    #: that path starts another ledger), so that the rows it answered are the rows read now
    bound_to_content: bool = False
    #: archived ledgers removed to keep at most ``keep``
    pruned: list[str] = field(default_factory=list)
    #: file descriptors locked for the run; closed by ``close``
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


def open_ledger(
    path: str, binding: dict[str, Any], *, input_name: str | None = None, keep: int = KEEP_LEDGERS
) -> OpenLedger:
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
        archived, pruned = None, []
        if header is not None and _another_input(header, binding):
            had = (header.get("input") or {}).get("path")
            raise ConfigError(
                f"ledger {path} belongs to another input ({had}, other content); choose another --ledger"
            )
        if header is not None and _stale(header, binding):
            archived = _archive_name(path, header)
            os.rename(path, archived)
            fd = _open_locked(path)
            locks.append(fd)
            header = None
            pruned = _prune(path, keep)
        index = LedgerIndex.load(path) if header is not None else LedgerIndex()
        writer = LedgerWriter(path, fd=os.dup(fd))
        if header is None:
            writer.write_event("header", version=LEDGER_VERSION, **binding)
            index.header = {"type": "header", "version": LEDGER_VERSION, **binding}
        bound = bool((binding.get("input") or {}).get("sha256"))
        return OpenLedger(writer, index, archived, bound, pruned, locks)
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


def _prune(path: str, keep: int) -> list[str]:
    """Remove the oldest archived ledgers of ``path`` beyond ``keep``; their names sort by date."""
    folder, name = os.path.split(os.path.abspath(path))
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
    pattern = re.compile(re.escape(stem) + r"\.\d{8}T\d{6}Z(?:-(\d+))?\.jsonl\Z")
    try:
        names = [n for n in os.listdir(folder) if pattern.match(n)]
    except OSError:
        return []

    def order(n: str) -> tuple[str, int]:
        m = pattern.match(n)
        return n[len(stem) + 1 : len(stem) + 17], int(m.group(1) or 1) if m else 0

    removed = []
    for old in sorted(names, key=order)[: max(0, len(names) - keep)]:
        full = os.path.join(folder, old)
        header = _first_record(full) if os.path.isfile(full) and not os.path.islink(full) else None
        if header is not None and header.get("type") == "header":
            with contextlib.suppress(OSError):
                os.remove(full)
                removed.append(full)
    return removed
