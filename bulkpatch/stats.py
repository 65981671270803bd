"""Counting outcomes in constant memory: status and HTTP counts, top errors, latency percentiles.

Used live during a run (progress, end-of-run summary) and by ``bulkpatch report`` over a ledger.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bulkpatch.ledger import RowResult, Status

# Latency buckets grow by 2% each: percentiles are within 2%, 1,000 counters cover 1 us..1 hour.
_GROWTH = math.log(1.02)
_MAX_ERRORS = 1000


class LatencyHistogram:
    """Milliseconds in logarithmic buckets; ``percentile`` is accurate to about 2%."""

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, ms: float) -> None:
        self._buckets[int(math.log(ms * 1000.0 + 1.0) / _GROWTH)] += 1
        self.count += 1

    def percentile(self, p: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return (math.exp((bucket + 0.5) * _GROWTH) - 1.0) / 1000.0
        return None  # pragma: no cover - rank never exceeds count


@dataclass
class Tally:
    """Counts of row outcomes."""

    by_status: Counter[Status] = field(default_factory=Counter)
    by_http_status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: requests sent, all attempts of all rows
    attempts: int = 0

    def add(self, result: RowResult) -> None:
        self.by_status[result.status] += 1
        if result.http_status is not None:
            self.by_http_status[result.http_status] += 1
        if result.error is not None:
            errors = self.errors
            # Bounded: a run with a million distinct errors keeps the first thousand kinds.
            if result.error in errors or len(errors) < _MAX_ERRORS:
                errors[result.error] += 1
        self.attempts += result.attempts
        if result.ms is not None:
            self.latency.add(result.ms)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def bad(self) -> int:
        """Rows that need attention: failed or invalid."""
        return self.by_status[Status.FAILED] + self.by_status[Status.INVALID]

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``bulkpatch report --json``."""
        return {
            "total": self.total,
            **{status.value: self.by_status[status] for status in Status},
            "by_http_status": {str(k): v for k, v in sorted(self.by_http_status.items())},
            "attempts": self.attempts,
            "top_errors": [{"error": error, "rows": n} for error, n in self.errors.most_common(5)],
            "latency_ms": {f"p{p}": _round(self.latency.percentile(p)) for p in (50, 95, 99)},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
