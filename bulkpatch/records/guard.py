"""Which existing files a write must not replace: bulkpatch changes no file it did not write.

``plan --snapshot``, ``export -o`` and ``report --failed-out`` name a file to write; a slip of the
keyboard may name the input itself, its ledger, another run's ledger or the sync state. Such a
target is refused (``ConfigError``, nothing written): one of the paths the caller protects (also
through ``./`` or a link), a ledger by its name or its header line, a SQLite database, and — for
a file that is not meant to be a run's input again — an input with a ledger beside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import orjson

from bulkpatch.errors import ConfigError

_SQLITE = b"SQLite format 3\x00"
_LEDGER_SUFFIX = ".ledger.jsonl"


def refuse_to_replace(option: str, path: str, protect: Sequence[str], *, run_inputs: bool = True) -> None:
    """``ConfigError`` when writing ``path`` would replace a file it must not (see the module)."""
    for other in protect:
        if other and other != "-" and same_file(path, other):
            raise ConfigError(f"{option} {path!r} is {other!r}, which this command reads; pick another name")
    if not os.path.exists(path):
        return
    if not os.path.isfile(path):
        # Renamed over, a directory fails and a device's node (/dev/stdout) would be replaced.
        raise ConfigError(
            f"{option} {path!r} is not a regular file (a directory, a device or a pipe); pick another name"
        )
    head = _head(path)
    if head.startswith(_SQLITE):
        raise ConfigError(f"{option} {path!r} is a SQLite database (a sync state?); pick another name")
    if path.endswith(_LEDGER_SUFFIX) or _is_ledger(head):
        raise ConfigError(f"{option} {path!r} is a bulkpatch ledger; pick another name")
    if not run_inputs and os.path.exists(path + _LEDGER_SUFFIX):
        raise ConfigError(
            f"{option} {path!r} is the input of the ledger {path + _LEDGER_SUFFIX!r} (it was run);"
            " move it away or pick another name"
        )


def same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # a hard link
    except OSError:
        return False


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.readline(64 * 1024)
    except OSError:
        return b""


def _is_ledger(first_line: bytes) -> bool:
    try:
        record = orjson.loads(first_line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("type") == "header" and "input" in record
