from __future__ import annotations

import pytest

from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.stats import Tally, error_kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("HTTP 404: NotFound: workload w-0007 not found", "HTTP 404: NotFound: workload <id> not found"),
        (
            "HTTP 404: workload 3f2a1b7c-1111-2222-3333-444455556666 not found",
            "HTTP 404: workload <id> not found",
        ),
        ("HTTP 409: version 12 is not 13", "HTTP 409: version <n> is not <n>"),
        ("HTTP 400: name 'abc' is taken", "HTTP 400: name '…' is taken"),
        # The parts of a message that are no ids stay as they are.
        ("HTTP 503", "HTTP 503"),
        ("invalid UTF-8", "invalid UTF-8"),
        (
            "enabled: expected true/false/1/0/yes/no, got 'maybe'",
            "enabled: expected true/false/1/0/yes/no, got '…'",
        ),
        ("HTTP 400: the workload's name can't be empty", "HTTP 400: the workload's name can't be empty"),
        ("missing workload_id", "missing workload_id"),
    ],
)
def test_error_kind_replaces_ids_numbers_and_quoted_values(error: str, kind: str) -> None:
    assert error_kind(error) == kind


def test_twenty_missing_workloads_are_one_kind_of_error_with_an_example_key() -> None:
    tally = Tally()
    for i in range(20):
        key = f"w-{i:04d}"
        tally.add(
            RowResult(
                i + 1, i + 2, key, Status.FAILED, 404, 1, f"HTTP 404: NotFound: workload {key} not found"
            )
        )
    tally.add(RowResult(21, 22, "w-0100", Status.FAILED, 503, 5, "HTTP 503"))
    assert tally.errors == {"HTTP 404: NotFound: workload <id> not found": 20, "HTTP 503": 1}
    assert tally.as_dict()["top_errors"] == [
        {"error": "HTTP 404: NotFound: workload <id> not found", "rows": 20, "example_key": "w-0000"},
        {"error": "HTTP 503", "rows": 1, "example_key": "w-0100"},
    ]


def test_kinds_of_error_are_bounded() -> None:
    tally = Tally()
    for i in range(1500):
        tally.add(RowResult(i + 1, i + 2, "k", Status.INVALID, None, 0, f"bad column {chr(0x4E00 + i)}"))
    assert len(tally.errors) == len(tally.error_examples) == 1000
    assert tally.by_status[Status.INVALID] == 1500
