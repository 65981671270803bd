"""The terminal side of the command line: standard streams that may be closed or cut short.

``bulkpatch … | head -1``, ``>&-`` and ``<&-`` are ordinary in scripts; none of them may turn a
run's outcome into a crash or another exit status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console


def fail(message: str, code: int) -> None:
    """One line on stderr (as ``stderr.fail`` writes it), then exit with ``code``."""
    from bulkpatch.cli.stderr import fail as fail_line

    fail_line(message, code, prefix="")


def ensure_std_streams() -> None:
    """Give a closed stdin, stdout or stderr (``<&-``, ``>&-``) /dev/null instead.

    Otherwise the next file opened takes the free descriptor 0, 1 or 2, and whatever writes to
    "stdout" then writes into it (uvloop aborts the process on it).
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            name = ("stdin", "stdout", "stderr")[fd]
            mode = "r" if fd == 0 else "w"
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 - lives as long as the process


def no_color() -> dict[str, Any]:
    """Console settings for ``NO_COLOR`` (https://no-color.org): set and not empty, no styling at all.

    rich drops colours for it but keeps bold and dim, and ``FORCE_COLOR`` would bring them back:
    with no colour system there is no escape sequence of any kind.
    """
    if os.environ.get("NO_COLOR", ""):
        return {"no_color": True, "color_system": None}
    return {}


def stderr_console() -> Console:
    """The console for progress on stderr, honouring ``NO_COLOR``."""
    return Console(stderr=True, highlight=False, **no_color())


class Stdout(Console):
    """A console on stdout for which a reader that went away is not an error.

    rich's own answer to EPIPE is ``SystemExit(1)``; a run's exit status is its outcome instead.
    Honours ``NO_COLOR``.
    """

    def __init__(self) -> None:
        super().__init__(highlight=False, soft_wrap=True, **no_color())

    def on_broken_pipe(self) -> None:
        self.quiet = True
        quiet_stdout()


def quiet_stdout() -> None:
    """After EPIPE on stdout: send the rest to /dev/null so that exiting does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def print_safely(show: Callable[[], None]) -> None:
    """Print to stdout; a reader that went away (``| head -1``) does not change the exit status."""
    try:
        show()
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
