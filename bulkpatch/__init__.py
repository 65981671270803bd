"""bulkpatch: apply one HTTP request per row of a CSV or JSONL file, resumably.

Library use::

    import asyncio
    from bulkpatch import Run, RunOptions

    options = RunOptions(input="workloads.csv", base_url="https://eu2-cloud.acronis.com",
                         token="...")
    result = asyncio.run(Run(options).execute())
    print(result.tally.as_dict(), result.exit_code)
"""

from bulkpatch.errors import (
    AuthError,
    BulkPatchError,
    ConfigError,
    InputError,
    TransportError,
    WorkerError,
)
from bulkpatch.ledger import RowResult, Status
from bulkpatch.mapping import DEFAULT_PATH, Mapper, PathTemplate, Rejected, Request
from bulkpatch.options import RunOptions
from bulkpatch.pacing import Pacer
from bulkpatch.pipeline import DryRunResult, Run, RunResult, dry_run
from bulkpatch.reader import Format, InputFile, Record
from bulkpatch.report import summarise, write_failed
from bulkpatch.resume import LedgerIndex, RetryFailed
from bulkpatch.retry import RetryPolicy
from bulkpatch.schema import Schema, WorkloadPatch
from bulkpatch.sender import Sender
from bulkpatch.stats import Tally
from bulkpatch.transport import AiohttpTransport, Response, Transport
from bulkpatch.worker_processes import ProcessTransport

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PATH",
    "AiohttpTransport",
    "AuthError",
    "BulkPatchError",
    "ConfigError",
    "DryRunResult",
    "Format",
    "InputError",
    "InputFile",
    "LedgerIndex",
    "Mapper",
    "Pacer",
    "PathTemplate",
    "ProcessTransport",
    "Record",
    "Rejected",
    "Request",
    "Response",
    "RetryFailed",
    "RetryPolicy",
    "RowResult",
    "Run",
    "RunOptions",
    "RunResult",
    "Schema",
    "Sender",
    "Status",
    "Tally",
    "Transport",
    "TransportError",
    "WorkerError",
    "WorkloadPatch",
    "__version__",
    "dry_run",
    "summarise",
    "write_failed",
]
