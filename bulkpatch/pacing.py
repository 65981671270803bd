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

  Concurrency alone does not slow a fast server's client down to that server's rate limit, so a
  429 also sets a *learned* rate: 90% of the rate that overloaded the server (at first, the
  successes counted in the last second). Each second without overload raises it by 5%, up to
  97% of the refused rate; only after 30 quiet seconds does it probe beyond, by 0.5% a second.
  Each rejection may pause everyone for a ``Retry-After``, so probing stays rare.
  ``--rate``, when given, is never exceeded.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

#: seconds without overload before a learned rate probes above 97% of the rate last refused
_PROBE_AFTER = 30.0


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
        on_change: Callable[[str, int, str], None] | None = None,
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
        self._user_rate = rate
        self._burst = burst
        self._learned_rate: float | None = None
        self._overload_rate = 0.0
        self._interval = 0.0
        self._tolerance = 0.0
        self._set_rate(rate)
        # Successes per one-second window, to learn a rate from when the server pushes back.
        self._window_start = clock()
        self._window_ok = 0
        self._last_window_ok = 0
        self._tat = 0.0
        self._pause_until = 0.0
        self._last_decrease = -1e18
        self._last_rate_cut = -1e18
        self._clock = clock
        self._sleep = sleep
        #: called with ("concurrency" or "rate", new value, why) when either changes
        self._on_change = on_change

    @property
    def rate(self) -> float | None:
        """The requests-per-second cap in force: ``--rate``, or a learned one if lower."""
        return 1.0 / self._interval if self._interval else None

    def _set_rate(self, rate: float | None) -> None:
        if self._user_rate is not None:
            rate = min(rate, self._user_rate) if rate is not None else self._user_rate
        self._interval = 1.0 / rate if rate else 0.0
        # Allow a few requests early so that timer jitter does not cost throughput (but no more
        # than two under a learned rate: that one sits just below what the server accepts).
        burst = self._burst
        if burst is None and self._learned_rate is not None and rate == self._learned_rate:
            burst = 2.0
        slots = burst if burst is not None else (min(10.0, max(1.0, rate / 20)) if rate else 0.0)
        self._tolerance = slots * self._interval

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
                try:
                    await self._sleep(wait)
                except BaseException:
                    self.release()  # cancelled or stopped while waiting: give the slot back
                    raise

    def release(self, *, ok: bool = False, overloaded: bool = False, rate_limited: bool = False) -> None:
        """Count a request as finished: ``ok`` for a success, ``overloaded`` for a 503 or 429,
        ``rate_limited`` (as well) for a 429."""
        self._in_use -= 1
        if self._adaptive:
            if ok:
                self._window_ok += 1
                now = self._clock()
                if now - self._window_start >= 1.0:
                    self._next_window(now)
                if self._limit < self.max_limit:
                    before = int(self._limit)
                    self._limit = min(float(self.max_limit), self._limit + 1.0 / self._limit)
                    if int(self._limit) != before:
                        self._changed("concurrency", self._limit, "raised after successes")
            elif overloaded or rate_limited:
                now = self._clock()
                if rate_limited and now - self._last_rate_cut >= self._cooldown:
                    self._cut_rate(now)
                if now - self._last_decrease >= self._cooldown:
                    self._halve_concurrency(now)
        self._wake()

    def pause(self, seconds: float) -> None:
        """Hold every worker back for ``seconds`` from now (a server's ``Retry-After``)."""
        self._pause_until = max(self._pause_until, self._clock() + seconds)

    def _next_window(self, now: float) -> None:
        self._last_window_ok = self._window_ok
        self._window_ok = 0
        self._window_start = now
        learned = self._learned_rate
        if learned is None or now - self._last_rate_cut < self._cooldown:
            return
        near = 0.97 * self._overload_rate
        if learned < near:
            learned = min(learned * 1.05, near)
        elif now - self._last_rate_cut >= _PROBE_AFTER:
            learned *= 1.005  # long quiet: the server may take more now
        else:
            return
        self._learned_rate = learned
        self._set_rate(learned)
        self._changed("rate", learned, "raised after a second without 429")

    def _cut_rate(self, now: float) -> None:
        self._last_rate_cut = now
        # The rate the server just refused: the learned one, or at first what succeeded lately.
        refused = self._learned_rate or max(self._last_window_ok, self._window_ok)
        if refused >= 1:
            self._overload_rate = refused
            self._learned_rate = 0.9 * refused
            self._set_rate(self._learned_rate)
            self._changed("rate", self._learned_rate, "set to 90% of the rate the server refused")

    def _halve_concurrency(self, now: float) -> None:
        self._last_decrease = now
        before = int(self._limit)
        self._limit = max(1.0, self._limit / 2)
        if int(self._limit) != before:
            self._changed("concurrency", self._limit, "halved after the server said slow down")

    def _changed(self, what: str, value: float, why: str) -> None:
        if self._on_change is not None:
            self._on_change(what, int(value), why)

    def _wake(self) -> None:
        free = int(self._limit) - self._in_use
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
