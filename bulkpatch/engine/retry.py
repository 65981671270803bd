"""What is worth another attempt, and how long to wait before it.

Retryable: a request that never got a status (connect error, timeout, dropped connection) and the
statuses 408, 425, 429, 500, 502, 503, 504. Any other status is final at once. The wait is
exponential backoff with full jitter (a uniform draw below a doubling ceiling, which spreads many
clients competing for one server), unless the server named a delay with ``Retry-After``: then that
delay, capped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: statuses that say "too much, slow down": they shrink the concurrency limit
OVERLOAD_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a row gets and how the waits between them grow."""

    #: attempts per row, the first one included
    max_attempts: int = 5
    #: ceiling of the first backoff draw, seconds; it doubles per failed attempt
    backoff_base: float = 0.5
    #: highest backoff ceiling, seconds
    backoff_cap: float = 30.0
    #: longest Retry-After honoured, seconds; a larger one is cut to this
    retry_after_cap: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_base < 0 or self.backoff_cap < 0 or self.retry_after_cap < 0:
            raise ValueError("backoff_base, backoff_cap and retry_after_cap must not be negative")


def is_retryable(status: int | None) -> bool:
    """True for no status at all (a transport failure) and for the retryable statuses."""
    return status is None or status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
