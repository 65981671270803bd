"""The exceptions bulkpatch raises.

Everything raised on purpose derives from one root::

    BulkPatchError
    ├── ConfigError        bad flag, option, environment or template: exit 2, nothing sent
    │   └── LedgerMismatch the ledger belongs to another input or path template
    ├── AuthError          the token endpoint refused or failed: exit 2
    ├── InputError         the input file broke off mid-way (truncated gzip, I/O error): exit 1
    ├── LedgerError        the ledger cannot be written (disk full): the run stops, exit 1
    └── TransportError     one HTTP attempt failed below HTTP (connect, timeout, dropped)

Row-level problems (a bad CSV record, a failed validation) are not exceptions to the caller:
they become ``invalid`` ledger records and the run goes on.
"""

from __future__ import annotations


class BulkPatchError(Exception):
    """Root of every exception bulkpatch raises on purpose."""


class ConfigError(BulkPatchError):
    """A flag, option, environment variable or template is wrong; nothing was sent."""


class LedgerMismatch(ConfigError):
    """The ledger was written for a different input file or path template."""


class AuthError(BulkPatchError):
    """No usable token could be obtained from the token endpoint."""


class InputError(BulkPatchError):
    """The input could not be read past some row; the rows before it were processed."""


class LedgerError(BulkPatchError):
    """The ledger could not be written; the run stopped so that no outcome goes unrecorded."""


class TransportError(BulkPatchError):
    """An HTTP attempt failed before a status line was received.

    ``kind`` is one of ``"connect"``, ``"timeout"``, ``"disconnect"``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class WorkerError(BulkPatchError):
    """A worker process (``--processes``) could not be started or ended unexpectedly."""
