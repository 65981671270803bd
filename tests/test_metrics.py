"""``run --metrics-file``: Prometheus text that prometheus_client's own parser reads back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bulkpatch.errors import ConfigError
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.metrics import check_writable, previous_success, write_metrics
from bulkpatch.records.outcome import Outcome, outcome_of
from bulkpatch.records.results import RunResult
from bulkpatch.records.stats import Tally


def parsed(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def a_result(ok: int, failed: int, invalid: int, *, requests: int) -> RunResult:
    tally = Tally()
    for i in range(ok):
        tally.add(RowResult(i + 1, i + 2, f"w{i}", Status.OK, 204, 1, None, 3.0))
    for i in range(failed):
        tally.add(RowResult(100 + i, 101 + i, f"x{i}", Status.FAILED, 404, 1, "HTTP 404: NotFound", 3.0))
    for i in range(invalid):
        tally.add(RowResult(200 + i, 201 + i, "", Status.INVALID, None, 0, "missing workload_id", None))
    state = dict(tally.by_status)
    for status in Status:
        state.setdefault(status, 0)
    return RunResult(tally, state, 5, 2.0, False, "a.csv.ledger.jsonl", input="a.csv", requests=requests)


def test_rows_requests_retries_and_exit_code_are_exposed(tmp_path: Path) -> None:
    outcome = outcome_of(
        a_result(7, 2, 1, requests=12),
        exit_code=1,
        finished_at=1_700_000_000.0,
        duration_s=3.5,
        answered=[0, 0, 7, 0, 2, 1, 0, 0, 0, 0],
        unanswered={"timeout": 1},
        retries=3,
    )
    path = tmp_path / "bulkpatch.prom"
    write_metrics(str(path), outcome)
    values = parsed(path)
    rows = {labels[0][1]: v for (name, labels), v in values.items() if name == "bulkpatch_rows_total"}
    assert rows == {"ok": 7, "failed": 2, "invalid": 1, "skipped": 0, "unchanged": 0, "already_done": 5}
    requests = {labels[0][1]: v for (name, labels), v in values.items() if name == "bulkpatch_requests_total"}
    assert (requests["2xx"], requests["4xx"], requests["5xx"], requests["timeout"]) == (7, 2, 1, 1)
    assert requests["cancelled"] == 1  # 12 sent, 11 with an answer or an error
    assert sum(requests.values()) == 12
    assert values[("bulkpatch_retries_total", ())] == 3
    assert values[("bulkpatch_exit_code", ())] == 1
    assert values[("bulkpatch_run_duration_seconds", ())] == 3.5
    assert values[("bulkpatch_last_run_timestamp_seconds", ())] == 1_700_000_000.0
    assert values[("bulkpatch_last_success_timestamp_seconds", ())] == 0  # never succeeded
    assert not any(name.endswith("_created") for name, _ in values)
    assert os.listdir(tmp_path) == ["bulkpatch.prom"]  # the temporary file was renamed


def test_the_last_success_outlives_failed_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "bulkpatch.prom")
    write_metrics(path, Outcome(0, 1_000.0, 1.0, began=True))
    write_metrics(path, Outcome(1, 2_000.0, 1.0, began=True))
    write_metrics(path, Outcome(2, 3_000.0, 1.0))  # refused: configuration
    assert previous_success(path) == 1_000.0
    values = parsed(Path(path))
    assert values[("bulkpatch_exit_code", ())] == 2
    assert values[("bulkpatch_run_began", ())] == 0
    write_metrics(path, Outcome(0, 4_000.0, 1.0, began=True))
    assert previous_success(path) == 4_000.0


def test_an_unreadable_previous_file_means_no_success_on_record(tmp_path: Path) -> None:
    path = tmp_path / "bulkpatch.prom"
    path.write_text("this is { not prometheus\n")
    assert previous_success(str(path)) is None
    write_metrics(str(path), Outcome(1, 2_000.0, 1.0, began=True))
    assert parsed(path)[("bulkpatch_last_success_timestamp_seconds", ())] == 0


def test_a_folder_that_cannot_take_the_file_is_refused_before_the_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--metrics-file"):
        check_writable(str(tmp_path / "missing" / "bulkpatch.prom"))
    with pytest.raises(ConfigError, match="--metrics-file"):
        check_writable(str(tmp_path))
    check_writable(str(tmp_path / "bulkpatch.prom"))
