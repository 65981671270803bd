"""How fast to send: one object every worker passes through before and after each request.

``Pacer`` composes three things that are kept apart elsewhere: the meters (``meters.py``: how
many at once, how many per second), a pause for everyone, and the flow-control policy
(``flow_policy.py``) that reads the answers and sets the meters' numbers. An attempt waits, in
this order, for the end of a pause, a concurrency slot, and its rate slot.

A quota the server announces in its answers (``quota.py``) caps the rate too, and when nothing
is left of it every worker waits for its reset, before any 429.

A server's ``Retry-After`` always delays the row that got it (the sender waits it); it pauses
*every* worker only while the recent answers show a pattern of overload. ``--rate``, when
given, is never exceeded, not even by a learned rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bulkpatch.engine.flow_policy import Answer, FlowControl, FlowPolicy, OnChange
from bulkpatch.engine.meters import ConcurrencyLimit, RateLimiter
from bulkpatch.engine.quota import AnnouncedQuota, Quota
from bulkpatch.engine.stopping import StopToken


class Pacer:
    """Shared by all workers: ``await acquire()`` before a request, ``release(...)`` after it.

    ``adaptive=False`` keeps the concurrency and the rate where they were set and honours every
    ``pause()``. ``cooldown``, if given, replaces the policy's shortest time between two
    decreases.
    """

    def __init__(
        self,
        concurrency: int,
        *,
        rate: float | None = None,
        burst: float | None = None,
        adaptive: bool = True,
        cooldown: float | None = None,
        policy: FlowPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: OnChange | None = None,
        stop: StopToken | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        policy = policy or FlowPolicy()
        if cooldown is not None:
            policy = replace(policy, cooldown=cooldown)
        self.max_limit = concurrency
        self.flow = FlowControl(concurrency, policy, on_change=on_change)
        self._slots = ConcurrencyLimit(concurrency)
        self._user_rate = rate
        #: the quota the server announces, if it does
        self.quota = AnnouncedQuota()
        self._announced_rate: float | None = None
        #: requests sent and not yet answered (the slots' count also holds those waiting for
        #: their rate slot): they spend an announced quota before their answers say so
        self.sent = 0
        self._on_change = on_change
        self._meter = RateLimiter(rate, burst=burst, clock=clock)
        self._adaptive = adaptive
        self._pause_until = 0.0
        self._clock = clock
        # Waits end early when the run stops; the caller then sees ``stop.stopped`` and gives up.
        self._stop = stop or StopToken(sleep)
        self._sleep = self._stop.sleep

    @property
    def rate(self) -> float | None:
        """The requests-per-second cap in force: ``--rate``, or a learned one if lower."""
        return self._meter.rate

    @property
    def limit(self) -> int:
        """The concurrency allowed now."""
        return self._slots.limit

    @property
    def paused_for(self) -> float:
        """Seconds left of a pause for everyone, or 0."""
        return max(0.0, self._pause_until - self._clock())

    def try_acquire(self) -> bool:
        """Count a request as in flight if it may go right now, without waiting; else False."""
        if self._meter.interval or self._pause_until > self._clock():
            return False
        if self._slots.try_acquire():
            self.sent += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait until a request may be sent, then count it as in flight."""
        await self._wait_out_pause()
        await self._slots.acquire()
        try:
            await self._wait_out_pause()  # one that began while this request queued for a slot
            wait = self._meter.reserve()
            if wait > 0:
                await self._sleep(wait)
                await self._wait_out_pause()  # one that began while waiting (a quota ran out)
        except BaseException:
            self._slots.release()  # cancelled or stopped while waiting: give the slot back
            raise
        self.sent += 1

    async def _wait_out_pause(self) -> None:
        while (left := self._pause_until - self._clock()) > 0 and not self._stop.stopped:
            await self._sleep(left)

    def release(
        self,
        *,
        ok: bool = False,
        overloaded: bool = False,
        rate_limited: bool = False,
    ) -> None:
        """Count a request as finished: ``ok`` for a 2xx, ``overloaded`` for a 503 or 429,
        ``rate_limited`` (as well) for a 429; none of them for any other answer (or none at all:
        an API that cannot be reached is the outage gate's business, ``outage.py``)."""
        self._slots.release()
        self.sent -= 1
        if not self._adaptive:
            return
        if ok:
            answer = Answer.OK
        elif rate_limited:
            answer = Answer.RATE_LIMITED
        elif overloaded:
            answer = Answer.OVERLOADED
        else:
            answer = Answer.OTHER
        if self.flow.answered(self._clock(), answer):
            self._slots.limit = int(self.flow.limit)
            self._set_rate()

    def _set_rate(self) -> None:
        caps = [r for r in (self._user_rate, self.flow.learned_rate, self._announced_rate) if r]
        self._meter.rate = min(caps) if caps else None

    def announce(self, quota: Quota) -> None:
        """An answer announced the server's quota: pace to it (after ``release`` of its request)."""
        pace, changed = self.quota.seen(self._clock(), quota, self.sent)
        if pace.hold > 0:
            self.hold(pace.hold)
        if pace.rate != self._announced_rate:
            self._announced_rate = pace.rate
            self._set_rate()
        if changed and self._on_change is not None and self.quota.limit is not None:
            why = f"announced by the server ({self.quota.form} headers): {self.quota.describe()}"
            self._on_change("quota", self.quota.limit, why)

    def pause(self, seconds: float) -> None:
        """A server asked for ``seconds`` of quiet: hold every worker back that long, but only
        while the recent answers show a pattern of overload (else it concerns one row). Without
        ``adaptive`` there is no evidence to weigh, and every such request is honoured."""
        now = self._clock()
        if not self._adaptive or self.flow.overloaded(now):
            self.hold(seconds)

    def hold(self, seconds: float) -> None:
        """Hold every worker back for ``seconds`` from now, whatever the evidence (e.g. while
        probing a server that stopped answering)."""
        self._pause_until = max(self._pause_until, self._clock() + seconds)
