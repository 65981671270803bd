"""The flow-control policy on its own: answers in, limit and learned rate out, time given."""

from __future__ import annotations

import random

import pytest

from bulkpatch.engine.flow_policy import Answer, FlowControl, FlowPolicy

OK, O503, O429, OTHER = (Answer.OK, Answer.OVERLOADED, Answer.RATE_LIMITED, Answer.OTHER)
#: a dropped connection or a timeout: the sender tells the pacer of it as of any other answer
NONE = OTHER


def feed(flow: FlowControl, answers: list[Answer], start: float, per_second: float) -> float:
    """Give ``answers`` to ``flow`` evenly spread at ``per_second``; return the time after them."""
    now = start
    for answer in answers:
        flow.answered(now, answer)
        now += 1.0 / per_second
    return now


def sporadic(n: int, seed: int = 7) -> list[Answer]:
    """Per-row faults as in issue #12: 10% of rows 503 twice, 5% 429 once, 5% 404, 3% no
    answer once; each retry follows its first answer a few dozen answers later."""
    rng = random.Random(seed)
    answers: list[Answer | None] = [None] * (n * 2)
    i = 0
    for _ in range(n):
        while answers[i] is not None:
            i += 1
        draw = rng.random()
        first, retries = (
            (O503, [O503, OK])
            if draw < 0.10
            else (O429, [OK])
            if draw < 0.15
            else (OTHER, [])
            if draw < 0.20
            else (NONE, [OK])
            if draw < 0.23
            else (OK, [])
        )
        answers[i] = first
        j = i
        for retry in retries:
            j += rng.randint(5, 60)
            while j < len(answers) and answers[j] is not None:
                j += 1
            if j < len(answers):
                answers[j] = retry
        i += 1
    return [a for a in answers if a is not None]


def test_per_row_faults_change_nothing() -> None:
    for seed in range(20):
        changes: list[tuple[str, int, str]] = []
        flow = FlowControl(32, on_change=lambda *c: changes.append(c))  # noqa: B023
        answers = sporadic(2000, seed)
        share = sum(a in (O503, O429) for a in answers) / len(answers)
        assert 0.15 < share < 0.25  # a fifth of all answers are 429 or 503...
        now = 1000.0
        for answer in answers:
            flow.answered(now, answer)
            assert not flow.overloaded(now), (seed, now)  # ...yet no one else waits for them
            now += 1 / 300
        assert changes == [] and flow.limit == 32 and flow.learned_rate is None


def test_a_stray_rejection_is_not_a_pattern() -> None:
    flow = FlowControl(16)
    now = feed(flow, [OK] * 50, 1000.0, 100)
    for answer in (O429, O503) * 9:  # 18 rejections among 68 answers: fewer than K=20
        flow.answered(now, answer)
    assert not flow.overloaded(now)
    assert flow.limit == 16 and flow.learned_rate is None


def test_a_rate_limit_is_learned_from_a_burst_of_429s() -> None:
    changes: list[tuple[str, int]] = []
    flow = FlowControl(64, on_change=lambda what, n, _: changes.append((what, n)))
    # The server takes 300 in its first second, then refuses everything.
    now = feed(flow, [OK] * 300, 1000.0, 3000)
    rejected = 0
    while flow.learned_rate is None:
        flow.answered(now, O429)
        rejected += 1
    # A quarter of the 100 latest answers: 25 429s, not one, make the pattern.
    assert rejected == 25 and flow.overloaded(now)
    assert flow.learned_rate == pytest.approx(0.9 * 300) and flow.limit == 64
    # 40% of the answers overloaded: concurrency drops too, gently (x0.9, not halved).
    feed(flow, [O429] * 15, now, 3000)
    assert flow.limit == pytest.approx(64 * 0.9)
    assert changes == [("rate", 270), ("concurrency", 57)]
    # More of the same burst within the cool-down counts once.
    for _ in range(100):
        flow.answered(now + 0.1, O429)
    assert flow.learned_rate == pytest.approx(270) and flow.limit == pytest.approx(57.6)


def test_a_learned_rate_recovers_to_just_below_the_limit_then_probes_only_after_quiet() -> None:
    flow = FlowControl(64)
    now = feed(flow, [OK] * 300, 1000.0, 3000)
    feed(flow, [O429] * 25, now, 3000)
    assert flow.learned_rate == pytest.approx(270)
    rates = []
    now += 4.0  # past the window: the burst is no longer evidence
    for _ in range(40):
        now = feed(flow, [OK] * 100, now, 100)
        rates.append(flow.learned_rate)
    # +5% a second up to 97% of the 300 the server refused above...
    assert rates[:3] == pytest.approx([270 * 1.05, 291.0, 291.0])
    # ...held there until 30 s after the last 429, then 0.5% a second.
    assert rates[25] == pytest.approx(291.0)
    assert 291.0 * 1.005**12 < rates[-1] <= 291.0 * 1.005**15  # 14 s of probing


def test_a_stray_429_stops_a_probe_but_cuts_nothing() -> None:
    flow = FlowControl(64, FlowPolicy(probe_after=5.0))
    now = feed(flow, [OK] * 300, 1000.0, 3000)
    now = feed(flow, [O429] * 25, now, 3000) + 4.0
    now = feed(flow, [OK] * 1000, now, 100)  # 10 s: up to 291, then probing
    probing = flow.learned_rate
    assert probing is not None and probing > 291.0
    flow.answered(now, O429)
    now = feed(flow, [OK] * 300, now, 100)
    assert flow.learned_rate == probing  # held, not cut, not raised


def test_concurrency_shrinks_once_per_cooldown_down_to_a_floor() -> None:
    flow = FlowControl(40)
    limits = []
    now = 1000.0
    for _ in range(60):  # a minute of half the answers being 503
        now = feed(flow, [OK, O503] * 50, now, 100)
        limits.append(flow.limit)
    assert limits[0] == pytest.approx(36)  # x0.9 once in the first second
    assert limits[2] == pytest.approx(36)
    assert limits[3] == pytest.approx(36 * 0.9)  # the next one a cool-down (3 s) later
    assert limits[-1] == 10  # the floor: a quarter of --concurrency
    assert flow.learned_rate is None  # 503s say nothing about a rate


def test_concurrency_recovers_by_one_per_limits_worth_of_successes() -> None:
    flow = FlowControl(40)
    now = feed(flow, [O503] * 20, 1000.0, 1000)
    assert flow.limit == pytest.approx(36)
    now = feed(flow, [OK] * 20, now + 3.1, 1000)  # the evidence expired: growth resumes
    assert 36.5 < flow.limit < 37
    feed(flow, [OK] * 200, now, 1000)
    assert flow.limit == 40


def test_evidence_is_the_recent_answers_only() -> None:
    policy = FlowPolicy(window=2.0, window_answers=50)
    flow = FlowControl(16, policy)
    feed(flow, [O503] * 20, 1000.0, 100)
    assert flow.overloaded(1000.3)
    assert not flow.overloaded(1002.5)  # older than the window
    now = feed(flow, [O503] * 20, 1010.0, 1000)
    assert flow.overloaded(now)
    feed(flow, [OK] * 50, now, 1000)  # pushed out by the 50 latest answers
    assert not flow.overloaded(now + 0.05)


def test_policy_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match=r"FlowPolicy\.window must be positive"):
        FlowPolicy(window=0)
    with pytest.raises(ValueError, match=r"FlowPolicy\.backoff must be at most 1"):
        FlowPolicy(backoff=1.5)
