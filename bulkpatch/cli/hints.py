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
