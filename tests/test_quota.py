"""A quota the server announces: parsing its three header forms, the pace it calls for (on a fake
clock), the whole sender against a fixed-window server on virtual time, and a run against the mock
on 127.0.0.1 (slow)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import FakeClock, write
from virtual_time import VirtualClock

from bulkpatch.engine.pacing import Pacer
from bulkpatch.engine.quota import AnnouncedQuota, Quota, parse_quota
from bulkpatch.engine.retry import RetryPolicy
from bulkpatch.engine.run import Run
from bulkpatch.engine.sender import Sender
from bulkpatch.http.transport import Response
from bulkpatch.mock import MockConfig, MockServer
from bulkpatch.mock.announce import quota_headers
from bulkpatch.mock.store import sample_workloads
from bulkpatch.options import RunOptions
from bulkpatch.records.ledger import Status
from bulkpatch.rows.mapping import Request

NOW = 1_800_000_000.0  # a Unix time


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"ratelimit": "limit=100, remaining=50, reset=5", "ratelimit-policy": "100;w=60"},
            Quota(50, 5.0, 100, 60.0, "ietf"),
        ),
        (
            {"ratelimit": '"default";r=50;t=30', "ratelimit-policy": '"default";q=100;w=60'},
            Quota(50, 30.0, 100, 60.0, "ietf"),
        ),
        (
            {"ratelimit-limit": "100, 100;w=60", "ratelimit-remaining": "7", "ratelimit-reset": "12"},
            Quota(7, 12.0, 100, 60.0, "legacy"),
        ),
        (
            {"ratelimit-limit": "100", "ratelimit-remaining": "7", "ratelimit-reset": "12"},
            Quota(7, 12.0, 100, None, "legacy"),
        ),
        # GitHub's reset is a Unix time; HubSpot-style delta seconds stay as they are.
        (
            {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "4999",
                "x-ratelimit-reset": str(int(NOW) + 90),
            },
            Quota(4999, 90.0, 5000, None, "x"),
        ),
        (
            {"x-ratelimit-limit": "100", "x-ratelimit-remaining": "3", "x-ratelimit-reset": "10"},
            Quota(3, 10.0, 100, None, "x"),
        ),
        # A reset already past is no reset in the past.
        (
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 5)},
            Quota(0, 0.0, None, None, "x"),
        ),
    ],
)
def test_the_three_header_forms_are_read(headers: dict[str, str], expected: Quota) -> None:
    assert parse_quota(headers, NOW) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"ratelimit-policy": "100;w=60"},  # a policy alone says nothing about what is left
        {"ratelimit": "limit=100"},
        {"x-ratelimit-remaining": "many", "x-ratelimit-reset": "10"},
    ],
)
def test_no_quota_without_remaining_and_reset(headers: dict[str, str]) -> None:
    assert parse_quota(headers, NOW) is None


def test_what_is_left_is_spread_over_the_time_to_the_reset() -> None:
    quota = AnnouncedQuota()
    pace, changed = quota.seen(10.0, Quota(50, 10.0, 5000, None, "x"))
    assert pace.rate == pytest.approx(5.0)
    assert pace.hold == 0
    assert changed
    assert quota.describe() == "5,000"
    _, changed = quota.seen(10.1, Quota(49, 9.9, 5000, None, "x"))
    assert not changed  # what is left changes every answer: not worth an event


def test_requests_in_flight_spend_the_quota_too() -> None:
    pace, _ = AnnouncedQuota().seen(0.0, Quota(30, 10.0, 100, 10.0, "ietf"), in_flight=10)
    assert pace.rate == pytest.approx(2.0)
    pace, _ = AnnouncedQuota().seen(0.0, Quota(10, 4.0, 100, 10.0, "ietf"), in_flight=10)
    assert pace.hold == pytest.approx(4.0)


def test_nothing_left_holds_everyone_until_the_reset_then_the_window_pace() -> None:
    pace, _ = AnnouncedQuota().seen(0.0, Quota(0, 2.5, 100, 10.0, "ietf"))
    assert pace.hold == pytest.approx(2.5)
    assert pace.rate == pytest.approx(1.5 * 100 / 10)


def test_never_faster_than_a_little_above_the_limit_per_window() -> None:
    # 90 left and 0.1 s to go would be 900/s: the window's pace bounds it.
    pace, _ = AnnouncedQuota().seen(0.0, Quota(90, 0.1, 100, 1.0, "ietf"))
    assert pace.rate is not None
    assert pace.rate <= 1.5 * 100


def test_the_windows_phase_refines_whole_second_resets() -> None:
    quota = AnnouncedQuota()
    quota.seen(0.0, Quota(3, 1.0, 100, 1.0, "ietf"))
    # The count went up at 0.3: a window began there; the next one begins at 1.3, not 1.0 + 1.
    quota.seen(0.3, Quota(99, 1.0, 100, 1.0, "ietf"))
    pace, _ = quota.seen(0.8, Quota(50, 1.0, 100, 1.0, "ietf"))
    assert pace.rate == pytest.approx(50 / 0.5)
    # Nothing left at 1.25: wait the 0.05 s to 1.3, not the whole second the header says.
    pace, _ = quota.seen(1.25, Quota(0, 1.0, 100, 1.0, "ietf"))
    assert pace.hold == pytest.approx(0.05)


def test_an_answer_from_the_old_window_does_not_hold_the_new_one() -> None:
    quota = AnnouncedQuota()
    quota.seen(0.0, Quota(3, 1.0, 100, 1.0, "ietf"))
    quota.seen(0.3, Quota(99, 1.0, 100, 1.0, "ietf"))
    # Just after 1.3 an answer admitted before it says 0 left: the new window has its quota.
    pace, _ = quota.seen(1.31, Quota(0, 0.0, 100, 1.0, "ietf"))
    assert pace.hold == 0


def test_a_window_not_announced_is_learned_from_when_the_count_goes_up() -> None:
    quota = AnnouncedQuota()
    quota.seen(0.0, Quota(1, 1.0, 100, None, "x"))
    quota.seen(0.2, Quota(99, 1.0, 100, None, "x"))
    quota.seen(1.0, Quota(1, 0.2, 100, None, "x"))
    quota.seen(1.2, Quota(99, 1.0, 100, None, "x"))
    assert quota.window_s == pytest.approx(1.0)
    assert quota.describe() == "100 per 1 s"


def test_the_pacer_paces_to_an_announced_quota_and_says_so_once() -> None:
    clock = FakeClock()
    changes: list[tuple[str, int, str]] = []
    pacer = Pacer(64, clock=clock, sleep=clock.sleep, on_change=lambda *c: changes.append(c))
    assert pacer.rate is None
    pacer.announce(Quota(100, 10.0, 600, 60.0, "ietf"))
    assert pacer.rate == pytest.approx(10.0)
    pacer.announce(Quota(0, 4.0, 600, 60.0, "ietf"))
    assert pacer.paused_for == pytest.approx(4.0)
    assert [(what, value) for what, value, _ in changes] == [("quota", 600)]
    assert "600 per 60 s" in changes[0][2]


def test_a_user_rate_below_the_quota_still_wins() -> None:
    clock = FakeClock()
    pacer = Pacer(64, rate=2.0, clock=clock, sleep=clock.sleep)
    pacer.announce(Quota(100, 10.0, 600, 60.0, "ietf"))
    assert pacer.rate == pytest.approx(2.0)


class AnnouncingServer:
    """A fixed-window server on virtual time: ``limit`` requests per ``window`` seconds (429 +
    ``Retry-After: 1`` above it), announced in every answer in the mock's header ``form``."""

    def __init__(self, limit: int, form: str, window: float = 1.0, latency: float = 0.005) -> None:
        self.limit, self.form, self.window, self.latency = limit, form, window, latency
        self.by_status: Counter[int] = Counter()
        self._window_index = -1
        self._used = 0

    async def send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None = None
    ) -> Response:
        now = asyncio.get_running_loop().time()
        index = math.floor(now / self.window)
        if index != self._window_index:
            self._window_index, self._used = index, 0
        admitted = self._used < self.limit
        self._used += admitted
        # The mock's headers, but for this window's length and phase (a delta reset rounds up).
        announced = {
            k.lower(): v
            for k, v in quota_headers(self.form, self.limit, self.limit - self._used, 0.0).items()
        }
        await asyncio.sleep(self.latency)
        status = 204 if admitted else 429
        self.by_status[status] += 1
        return Response(status, None if admitted else "1", b"", quota=announced)

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("form", ["ietf", "legacy"])
async def test_a_server_that_announces_its_quota_is_used_fully_without_429s(form: str) -> None:
    """300 per second announced, 3,000 rows at concurrency 64: ≥ 98% of 300/s, ≤ 0.5% 429s."""
    server = AnnouncingServer(300, form)
    with VirtualClock(start=1000.37).running() as clock:
        pacer = Pacer(64, clock=clock)
        sender = Sender(server, "", pacer=pacer, policy=RetryPolicy(max_attempts=10), clock=clock)
        queue = iter(Request(i, i + 1, f"w-{i}", f"/w/w-{i}", b"{}") for i in range(3000))
        statuses: list[Status] = []

        async def worker() -> None:
            for request in queue:
                result = await sender.send(request)
                assert result is not None
                statuses.append(result.status)

        started = clock()
        await asyncio.gather(*(worker() for _ in range(64)))
        elapsed = clock() - started
    assert statuses.count(Status.OK) == 3000
    assert 3000 / elapsed >= 0.98 * 300 * (1 - 1 / elapsed)  # the last window is part-used
    assert server.by_status[429] <= 0.005 * sum(server.by_status.values())


@pytest.mark.slow
@pytest.mark.parametrize("form", ["ietf", "x"])
async def test_a_run_against_the_announcing_mock_needs_almost_no_429(tmp_path: Path, form: str) -> None:
    rows = 300
    source = write(
        tmp_path / "fleet.csv",
        "workload_id,name\n"
        + "".join(f"{w['id']},renamed-{i}\n" for i, w in enumerate(sample_workloads(rows))),
    )
    events: list[tuple[str, dict[str, object]]] = []
    # 100/s: well below what client and mock manage together, even on a loaded machine.
    config = MockConfig(require_auth=False, workloads=rows, rate_limit=100, announce_rate_limit=form)
    async with MockServer(config) as server:
        options = RunOptions(input=str(source), base_url=server.url, concurrency=64)
        result = await Run(options, events=lambda e, f: events.append((e, f))).execute()
        statuses = server.api.counters.by_status
    assert result.exit_code == 0
    assert result.state[Status.OK] == rows
    assert statuses[429] <= 3
    assert [f["value"] for e, f in events if e == "quota_changed"][:1] == [100]
