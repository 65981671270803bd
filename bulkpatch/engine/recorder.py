"""Where a finished row goes: the ledger, the resume index, the tally and the memory.

The one writer of outcomes: one call records a row everywhere it must be known, so no path
through the run can record it in one place and forget another. An ``on_result`` callback (the
library's) sees each outcome last.
"""

from __future__ import annotations

from collections.abc import Callable

from bulkpatch.records.ledger import LedgerWriter, RowResult
from bulkpatch.records.memory import Memory
from bulkpatch.records.resume import LedgerIndex
from bulkpatch.records.stats import Tally


class Recorder:
    """``record(result)``: the one way a row's outcome is written down."""

    def __init__(
        self,
        writer: LedgerWriter,
        index: LedgerIndex,
        tally: Tally,
        memory: Memory | None = None,
        on_result: Callable[[RowResult], None] | None = None,
    ) -> None:
        self.writer = writer
        self.index = index
        self.tally = tally
        self.memory = memory
        self._on_result = on_result
        # Bound once: this runs once per row.
        self._write = writer.write
        self._set = index.set
        self._add = tally.add
        self._remember = memory.record if memory is not None else None

    def record(self, result: RowResult) -> None:
        self._write(result)
        self._set(result)
        self._add(result)
        if self._remember is not None:
            self._remember(result)
        if self._on_result is not None:
            self._on_result(result)
