"""The two meters every request passes through: how many at once, and how many per second.

They are kept apart (as aiometer keeps them) because they answer different questions and change
for different reasons: the concurrency limit follows the server's signs of overload, the rate
cap is ``--rate`` or a rate learned from 429s. Neither knows about the other, about pauses or
about why its number changes; ``Pacer`` composes them, ``FlowControl`` decides the numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

#: how early a request may go under a rate cap, in seconds (and at most ``_MAX_BURST`` requests'
#: worth): enough to absorb timer jitter, small enough that no one-second window holds more than
#: the rate plus 2% (plus the one request a window's edge may add).
_TOLERANCE_S = 0.02
_MAX_BURST = 10.0


class ConcurrencyLimit:
    """A semaphore whose size may change while it is held; waiters are served in FIFO order.

    Lowering the limit takes no slot away from a request already in flight: it only makes the
    next ones wait until enough of those have finished.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"concurrency must be at least 1, got {limit}")
        self._limit = limit
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = max(1, value)
        self._wake()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and no one is queued for it; else False, without waiting."""
        if self.in_use < self._limit and not self._waiters:
            self.in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot and take it."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif not waiter.cancelled():
                self.in_use -= 1  # the slot was handed over as this waiter was cancelled
                self._wake()
            raise

    def release(self) -> None:
        """Give a slot back."""
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        # A woken waiter owns its slot at once (counted here), so no late-comer can take it.
        while self.in_use < self._limit and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)


class RateLimiter:
    """A requests-per-second cap by GCRA (the generic cell rate algorithm).

    Each request reserves the next slot on a "theoretical arrival time" that advances by
    ``1/rate``; it may go when it is no more than the tolerance early. One number of state, no
    background task, and a reservation is final: a late sleeper does not push the others back.
    """

    def __init__(
        self,
        rate: float | None = None,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._clock = clock
        self._burst = burst
        self._tat = 0.0
        self.interval = 0.0
        self._tolerance = 0.0
        self.rate = rate

    @property
    def rate(self) -> float | None:
        """Requests per second, or None for no cap."""
        return 1.0 / self.interval if self.interval else None

    @rate.setter
    def rate(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        if not rate:
            self._tolerance = 0.0
            return
        slots = self._burst if self._burst is not None else min(_MAX_BURST, rate * _TOLERANCE_S)
        self._tolerance = slots * self.interval

    def reserve(self) -> float:
        """Reserve the next slot; return how many seconds to wait before using it (0 if none)."""
        if not self.interval:
            return 0.0
        now = self._clock()
        tat = max(self._tat, now)
        self._tat = tat + self.interval
        return max(0.0, tat - self._tolerance - now)
