"""How long a row waits before its next attempt: tenacity's wait strategy for the sender.

Kept apart from ``retry.py`` so that tenacity is imported only once a row needs a retry (most
runs' first request, and many whole runs, need none).
"""

from __future__ import annotations

from tenacity import RetryCallState, wait_random_exponential
from tenacity.wait import wait_base

from bulkpatch.engine.retry import RetryPolicy


class wait_retry_after_or_jitter(wait_base):  # noqa: N801 - tenacity's naming of strategies
    """Wait what the last response's ``Retry-After`` asked for, else backoff with full jitter.

    The last attempt's result must have a ``retry_after`` attribute (seconds or None).
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self._cap = policy.retry_after_cap
        self._jitter = wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_cap)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            asked: float | None = getattr(outcome.result(), "retry_after", None)
            if asked is not None:
                return min(asked, self._cap)
        return float(self._jitter(retry_state))
