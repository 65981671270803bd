"""The commands a summary suggests next, written so that pasting one is always safe.

A hint repeats the command line the operator typed, and a command line can hold secrets: an
``-H 'X-Api-Key: …'`` value, a password in a URL. Those are masked here (the operator types them
again). A suggested ``--failed-out`` file is never the run's own input or ledger, nor a file
that exists already: following the hint must not overwrite anything.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from bulkpatch.errors import (
    ApiUnreachable,
    AuthError,
    BulkPatchError,
    ConfigError,
    LedgerError,
    WrongTarget,
)
from bulkpatch.records.ledger import Status

if TYPE_CHECKING:
    from bulkpatch.records.results import RunResult

#: what a masked value reads as
MASK = "…"
# The userinfo of a URL (https://user:password@host), as a value or after --option=.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://)(?P<user>[^/@\s:]*)(?P<password>:[^/@\s]*)?@")
_BARE_USERINFO = re.compile(r"^(?P<option>--[\w-]+=)?(?P<user>[^/@\s:=]+):(?P<password>[^/@\s]+)@")


def safe_command(words: list[str]) -> str:
    """``words`` as one shell line, with header values and URL credentials masked.

    >>> safe_command(["bulkpatch", "run", "a.csv", "-H", "X-Api-Key: s3cret"])
    "bulkpatch run a.csv -H 'X-Api-Key: …'"
    """
    out: list[str] = []
    value_next = False
    for word in words:
        if value_next:
            out.append(_header_masked(word))
            value_next = False
        elif word == "--header":
            out.append(word)
            value_next = True
        elif word.startswith("--header="):
            out.append("--header=" + _header_masked(word[len("--header=") :]))
        elif word.startswith("-") and not word.startswith("--") and "H" in word:
            # -H, -qH: the value is the rest of the word, or else the next word.
            at = word.index("H") + 1
            if word[at:]:
                out.append(word[:at] + _header_masked(word[at:]))
            else:
                out.append(word)
                value_next = True
        else:
            out.append(_url_masked(word))
    return shlex.join(out)


def next_steps(result: RunResult, command: list[str], stopped: BaseException | None = None) -> list[str]:
    """What to type next after ``result``, one command per line, each only where it fits.

    A run that stopped early (``stopped``: the API out of reach, the first rows all failed
    alike, credentials refused, the input or the ledger broken) has no rows to fix: its rows
    failed or stayed unsent because of that one cause, so the hint is to fix it and go on.
    """
    if isinstance(stopped, KeyboardInterrupt):
        return [f"resume with: {safe_command(command)}"]
    if isinstance(stopped, BulkPatchError) and not isinstance(stopped, ConfigError):
        again = safe_command(command)
        if isinstance(stopped, WrongTarget):
            return ["check --base-url and --path, then run again (rows applied stay applied)"]
        if isinstance(stopped, ApiUnreachable):
            return [f"once the API answers again, the same command sends the rows left: {again}"]
        if isinstance(stopped, AuthError):
            return [f"with working credentials, the same command sends the rows left: {again}"]
        if isinstance(stopped, LedgerError):
            return [
                f"once the ledger and memory can be written (disk space?), the same command goes on: {again}"
            ]
        return [f"once the error is fixed, the same command goes on: {again}"]
    state = result.state
    hints: list[str] = []
    if result.interrupted:
        hints.append(f"resume with: {safe_command(command)}")
    elif result.limited:
        hints.append(f"stopped at --limit; go on with: {safe_command(without_limit(command))}")
    if result.transient_failed:
        retry = (
            command if any(w.startswith("--retry-failed") for w in command) else [*command, "--retry-failed"]
        )
        hints.append(f"retry failed rows (5xx, 429, timeouts; =all for 4xx too): {safe_command(retry)}")
    if state[Status.FAILED] or state[Status.INVALID]:
        fix = fix_file_name(result.input, result.ledger_path)
        report = ["bulkpatch", "report", result.ledger_path, "--failed-out", fix]
        hints.append(f"rows to fix: {safe_command(report)}")
    return hints


def without_limit(command: list[str]) -> list[str]:
    """``command`` without its ``--limit N``: the run that goes on after a canary."""
    out: list[str] = []
    skip = False
    for word in command:
        if skip:
            skip = False
        elif word == "--limit":
            skip = True
        elif not word.startswith("--limit="):
            out.append(word)
    return out


def fix_file_name(input_name: str, ledger: str) -> str:
    """A new file for the rows to fix: ``fix.csv``, else ``fix-2.csv``... (in the input's format).

    Never the input or the ledger, and never a file that exists: after a run of ``fix.csv`` the
    next one is ``fix-2.csv``.
    """
    extension = file_extension(input_name)
    taken = {os.path.realpath(input_name), os.path.realpath(ledger)}
    for n in itertools.count(1):
        name = f"fix{extension}" if n == 1 else f"fix-{n}{extension}"
        if os.path.realpath(name) not in taken and not os.path.lexists(name):
            return name
    raise AssertionError("unreachable")  # pragma: no cover


def file_extension(name: str) -> str:
    """``.csv``, ``.jsonl.gz``...: the input's own kind, for a file of rows to fix."""
    suffixes = Path(name).suffixes
    if suffixes and suffixes[-1] == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ".csv"


def _header_masked(value: str) -> str:
    name, colon, _ = value.partition(":")
    return f"{name}: {MASK}" if colon else MASK


def _url_masked(word: str) -> str:
    word = _USERINFO.sub(_userinfo_masked, word)
    return _BARE_USERINFO.sub(lambda m: f"{m['option'] or ''}{m['user']}:{MASK}@", word)


def _userinfo_masked(match: re.Match[str]) -> str:
    if match["password"] is None:  # a lone user part may be a token: mask it
        return f"{match['scheme']}{MASK}@"
    return f"{match['scheme']}{match['user']}:{MASK}@"
