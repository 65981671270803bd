from __future__ import annotations

import asyncio

import pytest
from fakes import FakeClock

from bulkpatch.pacing import Pacer


async def test_rate_cap_spaces_requests() -> None:
    clock = FakeClock()
    pacer = Pacer(100, rate=10, burst=0, clock=clock, sleep=clock.sleep, adaptive=False)
    sent_at = []
    for _ in range(30):
        await pacer.acquire()
        sent_at.append(clock.now)
        pacer.release(ok=True)
    start = sent_at[0]
    # No one-second window holds more than the rate (burst 0).
    for t in sent_at:
        assert sum(1 for u in sent_at if t <= u < t + 1.0) <= 10
    assert sent_at[-1] - start == pytest.approx(2.9)


async def test_rate_cap_shared_by_concurrent_workers() -> None:
    # Real time: a slow machine can only lower the counts this test bounds from above.
    loop = asyncio.get_running_loop()
    pacer = Pacer(8, rate=200, burst=2, adaptive=False)
    sent_at: list[float] = []

    async def worker() -> None:
        for _ in range(25):
            await pacer.acquire()
            sent_at.append(loop.time())
            pacer.release(ok=True)

    await asyncio.gather(*(worker() for _ in range(8)))
    assert len(sent_at) == 200
    for t in sent_at:
        assert sum(1 for u in sent_at if t <= u < t + 0.5) <= 100 + 3
    assert sent_at[-1] - sent_at[0] >= (200 - 3) / 200 - 0.02


async def test_concurrency_limit_halves_on_overload_and_recovers() -> None:
    clock = FakeClock()
    changes: list[int] = []
    pacer = Pacer(
        16,
        clock=clock,
        sleep=clock.sleep,
        on_change=lambda what, n, why: changes.append(n) if what == "concurrency" else None,
    )
    await pacer.acquire()
    pacer.release(overloaded=True)
    assert pacer.limit == 8
    # A burst of rejections within the cool-down counts once.
    for _ in range(5):
        await pacer.acquire()
        pacer.release(overloaded=True)
    assert pacer.limit == 8
    clock.now += 2
    await pacer.acquire()
    pacer.release(overloaded=True)
    assert pacer.limit == 4
    for _ in range(200):
        await pacer.acquire()
        pacer.release(ok=True)
    assert pacer.limit == 16
    assert changes[:2] == [8, 4] and changes[-1] == 16


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


async def test_pause_holds_every_worker() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock, sleep=clock.sleep)
    pacer.pause(5)
    assert pacer.paused_for == 5
    await pacer.acquire()
    assert clock.now == pytest.approx(1005.0)
    assert pacer.paused_for == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Pacer(0)
    with pytest.raises(ValueError, match="rate"):
        Pacer(1, rate=0)


async def test_overload_learns_a_rate_and_probes_upward() -> None:
    clock = FakeClock()
    changes: list[tuple[str, int]] = []
    pacer = Pacer(64, clock=clock, sleep=clock.sleep, on_change=lambda w, n, _: changes.append((w, n)))
    assert pacer.rate is None
    for _ in range(100):  # 100 successes in the first second...
        await pacer.acquire()
        pacer.release(ok=True)
    clock.now += 1.0
    await pacer.acquire()
    pacer.release(ok=True)  # ...and the 101st closes that window
    await pacer.acquire()
    pacer.release(overloaded=True)  # a 503: fewer at once, but no rate learned from it
    assert pacer.rate is None and pacer.limit == 32
    await pacer.acquire()
    pacer.release(rate_limited=True)  # a 429: the server pushes back
    assert pacer.rate == pytest.approx(0.9 * 101)
    assert ("rate", 90) in changes
    clock.now += 1.5
    await pacer.acquire()
    pacer.release(ok=True)  # a quiet second: the rate goes up by 5% (well below 101/s)
    assert pacer.rate == pytest.approx(0.9 * 101 * 1.05)
    clock.now += 1.5
    await pacer.acquire()
    pacer.release(rate_limited=True)  # refused again: 90% of the rate just refused
    assert pacer.rate == pytest.approx(0.9 * 0.9 * 101 * 1.05)


async def test_learned_rate_never_exceeds_the_users_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(8, rate=50, clock=clock, sleep=clock.sleep)
    for _ in range(200):
        await pacer.acquire()
        pacer.release(ok=True)
    pacer.release(rate_limited=True)
    assert pacer.rate is not None and pacer.rate <= 50
