"""The pacer and its meters, on a fake clock or on virtual time: no test here waits for real."""

from __future__ import annotations

import asyncio
import random

import pytest
from helpers import FakeClock
from virtual_time import VirtualClock

from bulkpatch.engine.meters import ConcurrencyLimit, RateLimiter
from bulkpatch.engine.pacing import Pacer


def busiest(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_rate_cap_spaces_requests() -> None:
    clock = FakeClock()
    pacer = Pacer(100, rate=10, burst=0, clock=clock, sleep=clock.sleep, adaptive=False)
    sent_at = []
    for _ in range(30):
        await pacer.acquire()
        sent_at.append(clock.now)
        pacer.release(ok=True)
    assert busiest(sent_at) == 10  # burst 0: no one-second window holds more than the rate
    assert sent_at[-1] - sent_at[0] == pytest.approx(2.9)


@pytest.mark.parametrize("rate", [10, 37, 100, 300, 1000])
async def test_rate_cap_holds_within_ten_percent_for_concurrent_workers(rate: int) -> None:
    """``--rate R``: no one-second window above R + 10%, however the answers come back."""
    rng = random.Random(rate)
    sent_at: list[float] = []
    with VirtualClock().running() as clock:
        pacer = Pacer(256, rate=rate, clock=clock)

        async def worker() -> None:
            for _ in range(rate * 5 // 256 + 1):
                await pacer.acquire()
                sent_at.append(clock())
                await asyncio.sleep(rng.choice([0.0, 0.001, 0.01, 0.05, 0.1, 0.5]))  # server latency
                pacer.release(ok=True)

        await asyncio.gather(*(worker() for _ in range(256)))
    assert busiest(sent_at) <= rate * 1.1
    assert busiest(sent_at) >= rate * 0.9  # and the cap is a cap, not a crawl


def test_default_burst_is_two_percent_of_a_second() -> None:
    clock = FakeClock()
    meter = RateLimiter(100, clock=clock)
    waits = [meter.reserve() for _ in range(5)]
    # Three go at once (the first, plus 20 ms of tolerance = 2 slots), then one per 10 ms.
    assert waits == pytest.approx([0, 0, 0, 0.01, 0.02])


async def test_limit_bounds_requests_in_flight() -> None:
    pacer = Pacer(3, adaptive=False)
    in_flight = peak = 0

    async def worker() -> None:
        nonlocal in_flight, peak
        for _ in range(10):
            await pacer.acquire()
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0)
            in_flight -= 1
            pacer.release(ok=True)

    await asyncio.gather(*(worker() for _ in range(10)))
    assert peak == 3


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    limit = ConcurrencyLimit(1)
    await limit.acquire()
    waiter = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)
    limit.release()  # hands the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limit.in_use == 0
    assert limit.try_acquire()


async def test_a_lowered_limit_takes_effect_as_requests_finish() -> None:
    limit = ConcurrencyLimit(4)
    for _ in range(4):
        assert limit.try_acquire()
    limit.limit = 2
    limit.release()
    limit.release()
    assert not limit.try_acquire()  # still two in flight: the limit
    limit.release()
    assert limit.try_acquire()


async def test_one_retry_after_delays_no_one_else() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    await pacer.acquire()
    pacer.release(overloaded=True, rate_limited=True)
    pacer.pause(5)  # one row's 429: that row waits (in the sender), the others go on
    assert pacer.paused_for == 0
    assert pacer.try_acquire()
    assert clock.now == 1000.0


async def test_a_pattern_of_429s_pauses_everyone_learns_a_rate_and_lowers_concurrency() -> None:
    clock = FakeClock()
    changes: list[tuple[str, int]] = []
    pacer = Pacer(64, clock=clock, sleep=clock.sleep, on_change=lambda w, n, _: changes.append((w, n)))
    for _ in range(100):
        await pacer.acquire()
        pacer.release(ok=True)
    for _ in range(50):
        await pacer.acquire()
    for _ in range(50):  # all rejected with Retry-After: 1
        pacer.release(overloaded=True, rate_limited=True)
        pacer.pause(1)
    assert pacer.paused_for == 1  # the pattern: now a Retry-After holds every worker
    assert pacer.rate == pytest.approx(90)  # 90% of what the server took in the last second
    assert pacer.limit == 57  # x0.9
    assert changes == [("rate", 90), ("concurrency", 57)]
    await pacer.acquire()
    assert clock.now == pytest.approx(1001.0)


async def test_hold_and_a_non_adaptive_pacer_pause_everyone() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    pacer.hold(5)
    assert pacer.paused_for == 5 and not pacer.try_acquire()
    await pacer.acquire()
    assert clock.now == pytest.approx(1005.0) and pacer.paused_for == 0
    fixed = Pacer(4, adaptive=False, clock=clock, sleep=clock.sleep)
    fixed.pause(3)  # no evidence is weighed without adaptation: honoured as asked
    assert fixed.paused_for == 3


async def test_learned_rate_never_exceeds_the_users_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(8, rate=50, clock=clock, sleep=clock.sleep)
    for _ in range(200):
        await pacer.acquire()
        pacer.release(ok=True)
    for _ in range(60):
        await pacer.acquire()
        pacer.release(rate_limited=True, overloaded=True)
    assert pacer.rate is not None and pacer.rate <= 50


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Pacer(0)
    with pytest.raises(ValueError, match="rate"):
        Pacer(1, rate=0)
