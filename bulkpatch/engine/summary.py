"""What a run did, from its parts: the ``RunResult`` it returns (and that an error that stopped it
carries), built in one place."""

from __future__ import annotations

from bulkpatch.engine.intake import Intake
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger_file import OpenLedger
from bulkpatch.records.memory import Memory
from bulkpatch.records.results import RunResult
from bulkpatch.records.stats import Tally


def result_of(
    options: RunOptions,
    tally: Tally,
    requests: int,
    intake: Intake,
    ledger: OpenLedger,
    memory: Memory | None,
    *,
    elapsed: float,
    cpu: float,
    interrupted: bool,
) -> RunResult:
    return RunResult(
        tally=tally,
        state=ledger.index.counts(),
        already_done=intake.already_done,
        elapsed=elapsed,
        interrupted=interrupted,
        ledger_path=options.ledger_path,
        rows_read=intake.rows_read,
        input=options.input,
        limited=intake.limited,
        cpu_s=cpu,
        processes=options.processes,
        requests=requests,
        changed=intake.changed,
        gone=memory.gone if memory is not None else 0,
        memory_path=memory.path if memory is not None else None,
        repeated_keys=intake.repeated_keys,
        archived_ledger=ledger.archived,
        state_path=options.state_path,
        transient_failed=ledger.index.transient_failures(),
        other_shards=intake.other_shards,
        shard=options.shard,
        rate=options.shard_rate,
    )
