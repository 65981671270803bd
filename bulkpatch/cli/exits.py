"""The exit status of a command that ended with an exception, in one place.

``main`` turns the exception into its one stderr line; ``run`` needs the same status first, for
its metrics file and webhook, before it lets the exception go on.
"""

from __future__ import annotations

from bulkpatch.errors import AuthError, ConfigError, MalformedInput

#: usage, configuration, credentials: nothing (more) was sent
EXIT_USAGE = 2
#: SIGINT / SIGTERM: the ledger is flushed, the same command resumes
EXIT_INTERRUPTED = 130


def exit_status(error: BaseException) -> int:
    """2 for configuration, credentials and an input that cannot be read as one (an unclosed
    quote), 130 for an interrupt, 1 for anything else."""
    if isinstance(error, ConfigError | AuthError | MalformedInput):
        return EXIT_USAGE
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return 1
