"""How fast to send: a requests-per-second cap, an adaptive concurrency limit, and server pauses.

Three separate meters that every attempt passes through, in this order:

* **pause** — a ``Retry-After`` from the server holds back *every* worker until that moment,
  not only the one that got it;
* **concurrency** — an AIMD limit below ``--concurrency``: halved when the server answers 429 or
  503 (at most once per cool-down, so one burst of rejections counts once), raised by one per
  limit's worth of successes, as loss-based congestion control does;
* **rate** — GCRA (the generic cell rate algorithm): each request reserves the next slot on a
  "theoretical arrival time" that advances by ``1/rate``; a request may go when it is no more
  than ``burst`` slots early. It needs one number of state and no background task.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class Pacer:
    """Shared by all workers: ``await acquire()`` before a request, ``release(...)`` after it."""

    def __init__(
        self,
        concurrency: int,
        *,
        rate: float | None = None,
        burst: float | None = None,
        adaptive: bool = True,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_limit_change: Callable[[int, str], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.max_limit = concurrency
        self._limit = float(concurrency)
        self._adaptive = adaptive
        self._cooldown = cooldown
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._interval = 1.0 / rate if rate else 0.0
        # Allow a few requests early so that timer jitter does not cost throughput.
        slots = burst if burst is not None else (min(10.0, max(1.0, rate / 20)) if rate else 0.0)
        self._tolerance = slots * self._interval
        self._tat = 0.0
        self._pause_until = 0.0
        self._last_decrease = -1e18
        self._clock = clock
        self._sleep = sleep
        self._on_limit_change = on_limit_change

    @property
    def limit(self) -> int:
        """The concurrency allowed now."""
        return int(self._limit)

    @property
    def paused_for(self) -> float:
        """Seconds left of a server-requested pause, or 0."""
        return max(0.0, self._pause_until - self._clock())

    def try_acquire(self) -> bool:
        """Count a request as in flight if it may go right now, without waiting; else False."""
        if (
            self._in_use < int(self._limit)
            and not self._waiters
            and not self._interval
            and self._pause_until <= self._clock()
        ):
            self._in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait until a request may be sent, then count it as in flight."""
        woken = False
        while True:
            now = self._clock()
            if now < self._pause_until:
                await self._sleep(self._pause_until - now)
                continue
            if self._in_use < int(self._limit) and (woken or not self._waiters):
                break
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # pass on the slot this cancelled waiter was handed
                raise
            woken = True
        self._in_use += 1
        if self._interval:
            now = self._clock()
            tat = max(self._tat, now)
            self._tat = tat + self._interval
            wait = tat - self._tolerance - now
            if wait > 0:
                await self._sleep(wait)

    def release(self, *, overloaded: bool = False, ok: bool = False) -> None:
        """Count a request as finished; ``overloaded`` for 429/503, ``ok`` for a success."""
        self._in_use -= 1
        if self._adaptive:
            if overloaded:
                self._decrease()
            elif ok and self._limit < self.max_limit:
                before = int(self._limit)
                self._limit = min(float(self.max_limit), self._limit + 1.0 / self._limit)
                if int(self._limit) != before and self._on_limit_change is not None:
                    self._on_limit_change(int(self._limit), "raised after successes")
        self._wake()

    def pause(self, seconds: float) -> None:
        """Hold every worker back for ``seconds`` from now (a server's ``Retry-After``)."""
        self._pause_until = max(self._pause_until, self._clock() + seconds)

    def _decrease(self) -> None:
        now = self._clock()
        if now - self._last_decrease < self._cooldown:
            return
        self._last_decrease = now
        before = int(self._limit)
        self._limit = max(1.0, self._limit / 2)
        if int(self._limit) != before and self._on_limit_change is not None:
            self._on_limit_change(int(self._limit), "halved after the server said slow down")

    def _wake(self) -> None:
        free = int(self._limit) - self._in_use
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
