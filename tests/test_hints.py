"""What a summary suggests next: only the steps that fit how the run ended."""

from __future__ import annotations

import pytest

from bulkpatch.cli.hints import next_steps
from bulkpatch.errors import ApiUnreachable, CredentialsRejected, LedgerError, WrongTarget
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.results import RunResult
from bulkpatch.records.stats import Tally

COMMAND = ["bulkpatch", "run", "a.csv", "--path", "/wrong/{workload_id}"]


def failed_run() -> RunResult:
    tally = Tally()
    for i in range(50):
        tally.add(RowResult(i + 1, i + 2, f"w{i}", Status.FAILED, 404, 1, "HTTP 404: NotFound", 3.0))
    state = dict.fromkeys(Status, 0) | {Status.FAILED: 50}
    return RunResult(tally, state, 0, 1.0, False, "a.csv.ledger.jsonl", input="a.csv", requests=50)


def test_rows_that_failed_on_their_own_are_rows_to_fix() -> None:
    (hint,) = next_steps(failed_run(), COMMAND)
    assert hint.startswith("rows to fix: bulkpatch report a.csv.ledger.jsonl --failed-out fix")


@pytest.mark.parametrize(
    ("stopped", "expected"),
    [
        (WrongTarget("the first 50 rows sent all failed with HTTP 404"), "check --base-url and --path"),
        (ApiUnreachable("API unreachable since 09:00"), "once the API answers again"),
        (CredentialsRejected("credentials rejected"), "with working credentials"),
        (LedgerError("disk full"), "once the ledger and memory can be written"),
    ],
)
def test_a_run_stopped_by_one_cause_has_no_rows_to_fix(stopped: Exception, expected: str) -> None:
    hints = next_steps(failed_run(), COMMAND, stopped)
    assert len(hints) == 1 and hints[0].startswith(expected)
    assert not any("--failed-out" in hint or "--retry-failed" in hint for hint in hints)
