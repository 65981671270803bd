"""bulkpatch: apply one HTTP request per row of a CSV or JSONL file, resumably.

Library use::

    import bulkpatch

    summary = bulkpatch.run("workloads.csv", base_url="https://eu2-cloud.acronis.com", token="...")
    print(summary.tally.as_dict(), summary.exit_code)

Rows can come from code too (any iterable or async iterable of mappings, with ``ledger=``).
``bulkpatch.plan``, ``verify`` and ``export`` (and their ``_async`` twins) are the commands
around a run; ``bulkpatch.testing.MockTransport`` answers requests in your own tests without a
network.
The names below are the public API; the modules behind them are implementation details.
Imports are lazy, so that ``bulkpatch --help`` does not pay for aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: public name → the module that defines it
_EXPORTS = {
    "ApiUnreachable": "errors",
    "AuthError": "errors",
    "BulkPatchError": "errors",
    "ConfigError": "errors",
    "CredentialsRejected": "errors",
    "DryRunResult": "engine.preview",
    "ExportResult": "ops.export",
    "InputError": "errors",
    "LedgerError": "errors",
    "LoopRunning": "errors",
    "PlanResult": "ops.plan",
    "Response": "http.transport",
    "RetryFailed": "records.resume",
    "RowResult": "records.ledger",
    "Run": "engine.run",
    "RunOptions": "options",
    "RunResult": "records.results",
    "RunStatus": "records.results",
    "RunStopped": "errors",
    "Schema": "rows.schema",
    "Status": "records.ledger",
    "Transport": "http.transport",
    "TransportError": "errors",
    "VerifyResult": "ops.verify",
    "WorkerError": "errors",
    "WorkloadPatch": "rows.schema",
    "WrongTarget": "errors",
    "dry_run": "engine.preview",
    "export": "operations",
    "export_async": "operations",
    "plan": "operations",
    "plan_async": "operations",
    "run": "api",
    "run_async": "api",
    "verify": "operations",
    "verify_async": "operations",
}

__all__ = [
    "ApiUnreachable",
    "AuthError",
    "BulkPatchError",
    "ConfigError",
    "CredentialsRejected",
    "DryRunResult",
    "ExportResult",
    "InputError",
    "LedgerError",
    "LoopRunning",
    "PlanResult",
    "Response",
    "RetryFailed",
    "RowResult",
    "Run",
    "RunOptions",
    "RunResult",
    "RunStatus",
    "RunStopped",
    "Schema",
    "Status",
    "Transport",
    "TransportError",
    "VerifyResult",
    "WorkerError",
    "WorkloadPatch",
    "WrongTarget",
    "__version__",
    "dry_run",
    "export",
    "export_async",
    "plan",
    "plan_async",
    "run",
    "run_async",
    "verify",
    "verify_async",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bulkpatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bulkpatch.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from bulkpatch.api import run, run_async
    from bulkpatch.engine.preview import DryRunResult, dry_run
    from bulkpatch.engine.run import Run
    from bulkpatch.errors import (
        ApiUnreachable,
        AuthError,
        BulkPatchError,
        ConfigError,
        CredentialsRejected,
        InputError,
        LedgerError,
        LoopRunning,
        RunStopped,
        TransportError,
        WorkerError,
        WrongTarget,
    )
    from bulkpatch.http.transport import Response, Transport
    from bulkpatch.operations import export, export_async, plan, plan_async, verify, verify_async
    from bulkpatch.ops.export import ExportResult
    from bulkpatch.ops.plan import PlanResult
    from bulkpatch.ops.verify import VerifyResult
    from bulkpatch.options import RunOptions
    from bulkpatch.records.ledger import RowResult, Status
    from bulkpatch.records.results import RunResult, RunStatus
    from bulkpatch.records.resume import RetryFailed
    from bulkpatch.rows.schema import Schema, WorkloadPatch
