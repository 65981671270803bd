"""Every line bulkpatch writes to stderr: plain text, or one JSON object each (``--log-format json``).

A log shipper that parses JSON drops or mangles a line that is not JSON, so with ``--log-format
json`` nothing reaches stderr any other way: notices, warnings, the one-line errors of
``cli/main.py`` and click's usage errors, and the ``end`` event that closes every command (with
its exit status, and the error that ended it, if one did). The format is chosen once per
command: from the command line as soon as it is parsed (usage errors included), then from the
run's own settings (a config file may ask for JSON).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import orjson

from bulkpatch.cli.logline import LogFormat, utc

_format: list[LogFormat] = ["text"]
#: True when the command line named the format (a config file's then does not count)
_named: list[bool] = [False]


def use_format(log_format: LogFormat, *, named: bool = False) -> None:
    """Write the following lines as ``log_format``; ``named``: the command line asked for it."""
    _format[0] = log_format
    _named[0] = named


def format_named() -> bool:
    """True when the command line itself chose the format."""
    return _named[0]


def json_lines() -> bool:
    """True when every stderr line is one JSON object."""
    return _format[0] == "json"


def format_in(args: list[str]) -> LogFormat | None:
    """The ``--log-format`` a command line asks for, read before click parses it.

    A usage error (an unknown option, say) stops click before any option is processed; its line
    must still be JSON when the command line asked for JSON.
    """
    found: LogFormat | None = None
    for word, after in zip(args, [*args[1:], ""], strict=True):
        if word == "--":
            break
        value = word.partition("=")[2] if word.startswith("--log-format=") else after
        if word.startswith("--log-format") and value in ("text", "json"):
            found = "json" if value == "json" else "text"
    return found


def write_line(text: str, record: dict[str, Any]) -> None:
    """``text`` or ``record`` (as JSON, stamped with the time): one line; a closed stderr is no error."""
    if json_lines():
        text = orjson.dumps({"ts": utc(time.time()), **record}).decode()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def notice(message: str) -> None:
    """Something the operator should know; not a problem."""
    write_line(f"bulkpatch: {message}", {"level": "info", "event": "notice", "message": message})


def warning(message: str) -> None:
    """Something went wrong that does not change the outcome (a webhook that failed, say)."""
    write_line(f"bulkpatch: warning: {message}", {"level": "warning", "event": "warning", "message": message})


def end(
    code: int, error: str | None, *, prefix: str = "bulkpatch: error: ", fields: dict[str, Any] | None = None
) -> None:
    """The command's last line: text mode writes ``error`` alone (if any); JSON an ``end`` event
    with the exit status, the error and ``fields`` (what the run did)."""
    if not json_lines():
        if error is not None:
            write_line(prefix + error, {})
        return
    level = "error" if error is not None else "info" if code == 0 else "warning"
    write_line("", {"level": level, "event": "end", "exit_code": code, "error": error, **(fields or {})})


def fail(error: str, code: int, *, prefix: str = "bulkpatch: error: ") -> None:
    """End the command with ``error`` (one line), exit status ``code``."""
    end(code, error, prefix=prefix)
    sys.exit(code)
