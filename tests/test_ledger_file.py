"""Opening a ledger: archived ledgers of a changed input are kept to a bound; shards' ledgers."""

from __future__ import annotations

from pathlib import Path

from bulkpatch.options import RunOptions
from bulkpatch.records.ledger_file import input_identity, open_ledger


def bind(source: Path) -> dict[str, object]:
    return {"input": input_identity(str(source)), "path_template": "/w/{id}", "method": "PATCH"}


def test_archived_ledgers_are_kept_to_a_bound_and_only_ledgers_are_removed(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    ledger = str(tmp_path / "in.csv.ledger.jsonl")
    lookalike = tmp_path / "in.csv.ledger.19990101T000000Z.jsonl"
    lookalike.write_text("not a ledger, though named like one\n")
    archived = []
    for night in range(6):
        source.write_text(f"workload_id,name\nw1,v{night}\n")
        opened = open_ledger(ledger, bind(source), input_name=str(source), keep=3)
        opened.writer.write_event("run", event="start")
        opened.close()
        if opened.archived:
            archived.append(opened.archived)
    kept = sorted(p.name for p in tmp_path.glob("in.csv.ledger.*.jsonl") if p != lookalike)
    assert len(archived) == 5 and len(kept) == 3
    assert lookalike.exists()  # not bulkpatch's: never removed
    assert Path(ledger).exists()


def test_an_explicit_ledger_is_per_shard_like_the_state(tmp_path: Path) -> None:
    def options(k: int) -> RunOptions:
        return RunOptions(
            input="in.csv", base_url="http://api.test", ledger=str(tmp_path / "run.jsonl"), shard=(k, 2)
        )

    assert options(0).ledger_path != options(1).ledger_path
    assert options(0).ledger_path.endswith("run.shard-0-of-2.jsonl")
    assert options(0).memory_path != options(1).memory_path
