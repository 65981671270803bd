from __future__ import annotations

from pathlib import Path

from bulkpatch.cli.demo import DEMO_ROWS, migration_csv, migration_jsonl
from bulkpatch.engine.preview import dry_run
from bulkpatch.options import RunOptions

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def test_bundled_samples_are_the_demo_migration() -> None:
    assert (SAMPLES / "workloads.csv").read_text(encoding="utf-8") == migration_csv()
    assert (SAMPLES / "workloads.jsonl").read_text(encoding="utf-8") == migration_jsonl()


def test_samples_validate() -> None:
    for name in ("workloads.csv", "workloads.jsonl"):
        found = dry_run(RunOptions(input=str(SAMPLES / name), dry_run=True))
        assert found.tally.total == DEMO_ROWS and found.tally.bad == 0


def test_bad_rows_sample_shows_each_kind_of_problem() -> None:
    found = dry_run(RunOptions(input=str(SAMPLES / "bad-rows.csv"), dry_run=True))
    reasons = [r.reason for r in found.rejected]
    assert reasons == [
        "missing workload_id",
        "enabled: expected true/false/1/0/yes/no, got 'maybe'",
        "allowed_actions: not a valid JSON array",
    ]
