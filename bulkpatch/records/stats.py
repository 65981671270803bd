"""Counting outcomes in constant memory: status and HTTP counts, top errors, latency percentiles.

Used live during a run (progress, end-of-run summary) and by ``bulkpatch report`` over a ledger.
Errors are counted by kind, not by exact text: a server that names the missing workload in each
404 would otherwise fill "most common errors" with one line per row.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bulkpatch.records.ledger import RowResult, Status

# Latency buckets grow by 2% each: percentiles are within 2%, 1,000 counters cover 1 us..1 hour.
_GROWTH = math.log(1.02)
_MAX_ERRORS = 1000
#: latencies above this (a year) are counted as this
_LONGEST_MS = 365 * 24 * 3600 * 1000.0

_HTTP_PREFIX = re.compile(r"HTTP \d{3}\b")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A quoted value ('maybe', "w-1") but not an apostrophe inside a word (workload's).
_QUOTED = re.compile(r"""(?<!\w)(['"])(?:(?!\1).){1,80}\1(?!\w)""")
# A word holding two digits or more (w-0007, 404-0, a1b2c3), or a number of two digits or more.
# One digit alone stays: "UTF-8", "v5" and "true/false/1/0" are part of the message, not an id.
_ID_OR_NUMBER = re.compile(r"(?<![\w.~-])[\w.~-]*\d[\w.~-]*\d[\w.~-]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?").fullmatch


def error_kind(error: str) -> str:
    """``error`` with ids, UUIDs, quoted values and numbers replaced, to group rows by kind.

    The leading HTTP status stays, since it tells kinds apart:

    >>> error_kind("HTTP 404: NotFound: workload w-0007 not found")
    'HTTP 404: NotFound: workload <id> not found'
    """
    head = _HTTP_PREFIX.match(error)
    at = head.end() if head else 0
    rest = _UUID.sub("<id>", error[at:])
    rest = _QUOTED.sub(r"\1…\1", rest)
    rest = _ID_OR_NUMBER.sub(_placeholder, rest)
    return error[:at] + rest


def _placeholder(match: re.Match[str]) -> str:
    return "<n>" if _NUMBER(match.group()) else "<id>"


class LatencyHistogram:
    """Milliseconds in logarithmic buckets; ``percentile`` is accurate to about 2%."""

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0

    def add(self, ms: float) -> None:
        # A hand-edited ledger may say 1e308: it counts in the last bucket instead of overflowing.
        ms = min(max(ms, 0.0), _LONGEST_MS) if math.isfinite(ms) else _LONGEST_MS
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
    #: rows per kind of error (see ``error_kind``)
    errors: Counter[str] = field(default_factory=Counter)
    #: the key of the first row seen with each kind of error
    error_examples: dict[str, str] = field(default_factory=dict)
    #: the row number (in its input) of that first row: rows that never had a key have one too
    error_rows: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: requests sent, all attempts of all rows
    attempts: int = 0

    def add(self, result: RowResult) -> None:
        self.by_status[result.status] += 1
        if result.http_status is not None:
            self.by_http_status[result.http_status] += 1
        if result.error is not None:
            errors = self.errors
            kind = error_kind(result.error)
            # Bounded: a run with a million kinds of error keeps the first thousand.
            if kind in errors:
                errors[kind] += 1
            elif len(errors) < _MAX_ERRORS:
                errors[kind] = 1
                self.error_examples[kind] = result.key
                self.error_rows[kind] = result.row
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
            "top_errors": [
                {"error": error, "rows": n, "example_key": self.error_examples.get(error, "")}
                for error, n in self.errors.most_common(5)
            ],
            "latency_ms": {f"p{p}": _round(self.latency.percentile(p)) for p in (50, 95, 99)},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
