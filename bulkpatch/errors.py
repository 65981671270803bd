"""The exceptions bulkpatch raises.

Everything raised on purpose derives from one root::

    BulkPatchError
    ├── ConfigError        bad flag, option, environment or template: exit 2, nothing sent
    ├── AuthError          the token endpoint refused or failed: exit 2
    │   └── CredentialsRejected  the API answered 401 (or 403 before any success): exit 2
    ├── InputError         the input file broke off mid-way (truncated gzip, I/O error): exit 1
    │   └── MalformedInput a CSV quote never closed: the rest of the file is no rows: exit 2
    ├── LedgerError        the ledger cannot be written (disk full): the run stops, exit 1
    ├── RunStopped         every row left would fail: the run stops early, exit 1
    │   ├── ApiUnreachable the API could not be reached for longer than --max-outage
    │   └── WrongTarget    the first rows sent all failed alike (wrong --base-url or --path?)
    ├── TransportError     one HTTP attempt failed below HTTP (connect, timeout, dropped)
    ├── LoopRunning        a blocking call (``run``, ``plan``…) made inside a running event loop
    └── WorkerError        a worker process (--processes) could not start or died

A run that stops early leaves the rows it did not finish unrecorded: the same command, once the
cause is fixed, sends them.

Row-level problems (a bad CSV record, a failed validation) are not exceptions to the caller:
they become ``invalid`` ledger records and the run goes on.
"""

from __future__ import annotations


class BulkPatchError(Exception):
    """Root of every exception bulkpatch raises on purpose."""

    #: for an error that stopped a run: what the run did until then (a ``RunResult``)
    result: object | None = None


class ConfigError(BulkPatchError):
    """A flag, option, environment variable or template is wrong; nothing was sent."""


class AuthError(BulkPatchError):
    """No usable token could be obtained from the token endpoint."""


class CredentialsRejected(AuthError):
    """The API refused the credentials themselves: every row would fail the same way."""


class InputError(BulkPatchError):
    """The input could not be read past some row; the rows before it were processed."""


class MalformedInput(InputError):
    """The input cannot be split into rows past some line (a CSV quote that never closes); the
    rows before it were processed, none after it was sent."""


class LedgerError(BulkPatchError):
    """The ledger could not be written; the run stopped so that no outcome goes unrecorded."""


class RunStopped(BulkPatchError):
    """The run stopped early because the rows left would all fail."""


class ApiUnreachable(RunStopped):
    """No connection to the API could be made for longer than the outage allowance."""


class WrongTarget(RunStopped):
    """The first rows sent all failed with the same status: the URL is probably wrong."""


class TransportError(BulkPatchError):
    """An HTTP attempt failed before a status line was received.

    ``kind`` is one of ``"connect"``, ``"timeout"``, ``"disconnect"``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class LoopRunning(BulkPatchError, RuntimeError):
    """``bulkpatch.run()`` (or ``plan``, ``verify``, ``export``) was called where an event loop
    runs already; await its ``_async`` twin there. Also a ``RuntimeError``, as asyncio's is."""


class WorkerError(BulkPatchError):
    """A worker process (``--processes``) could not be started or ended unexpectedly."""
