from __future__ import annotations

import pytest

from bulkpatch.records.timeline import BASE_WIDTH, Timeline

T0 = 1_800_000_000.0


def test_rows_in_flight_are_the_overlap_of_each_rows_send_interval() -> None:
    timeline = Timeline()
    # Four rows in flight for the first second, then two for the next one.
    for _ in range(4):
        timeline.add(T0 + 1.0, 1000.0, sent=True)
    for _ in range(2):
        timeline.add(T0 + 2.0, 1000.0, sent=True)
    series = timeline.in_flight(points=1000)
    assert series.width == pytest.approx(BASE_WIDTH)
    assert series.start == pytest.approx(T0, abs=BASE_WIDTH)
    inside = [v for i, v in enumerate(series.values) if 0.1 < series.start + i * series.width - T0 < 0.9]
    later = [v for i, v in enumerate(series.values) if 1.1 < series.start + i * series.width - T0 < 1.9]
    assert inside and all(v == pytest.approx(4.0) for v in inside)
    assert later and all(v == pytest.approx(2.0) for v in later)
    # Busy time is conserved: 4 rows x 1 s + 2 rows x 1 s.
    assert sum(series.values) * series.width == pytest.approx(6.0)


def test_rows_per_second_counts_every_outcome_or_only_the_sent_ones() -> None:
    timeline = Timeline()
    for i in range(100):
        timeline.add(T0 + i / 10, 5.0, sent=i % 4 != 0)  # every fourth never sent (invalid, ...)
    everything = timeline.rows_per_second(points=10)
    sent = timeline.rows_per_second(points=10, sent_only=True)
    assert sum(everything.values) * everything.width == pytest.approx(100)
    assert sum(sent.values) * sent.width == pytest.approx(75)
    assert len(everything.values) <= 10
    # 10 rows a second, steadily.
    assert max(everything.values) == pytest.approx(min(everything.values[:-1]), rel=0.35)


def test_bins_widen_so_memory_stays_bounded_over_a_long_span() -> None:
    timeline = Timeline(max_bins=64)
    for i in range(10_000):
        timeline.add(T0 + i * 60.0, 250.0, sent=True)  # a week, a row a minute
    assert timeline.width > 60 * 10_000 / 64 / 2
    assert len(timeline._done) <= 65 and len(timeline._busy) <= 65
    series = timeline.rows_per_second(points=50)
    assert sum(series.values) * series.width == pytest.approx(10_000)
    busy = timeline.in_flight(points=50)
    assert sum(busy.values) * busy.width == pytest.approx(10_000 * 0.25)


def test_one_absurd_latency_does_not_stretch_the_chart_past_a_day() -> None:
    timeline = Timeline()
    timeline.add(T0, 1e15, sent=True)
    assert timeline.span == pytest.approx(86_400)


def test_an_empty_timeline_has_no_points() -> None:
    timeline = Timeline()
    assert timeline.empty and timeline.span == 0.0
    assert timeline.rows_per_second(points=10).values == []


def test_idle_time_between_runs_is_cut_out_and_said_where() -> None:
    timeline = Timeline()
    for i in range(100):  # a 10-second run, a fix-up run a day later, another 10 seconds
        timeline.add(T0 + i / 10, 50.0, sent=True)
        timeline.add(T0 + 86_400 + i / 10, 50.0, sent=True)
    series = timeline.rows_per_second(points=60)
    assert len(series.gaps) == 1
    at, idle = series.gaps[0]
    assert idle == pytest.approx(86_390, abs=2 * timeline.width)
    # The chart holds the 20 active seconds, not a day: rows on both sides of the cut.
    assert len(series.values) * series.width < 60
    assert sum(series.values[:at]) > 0 and sum(series.values[at:]) > 0
    assert sum(series.values) * series.width == pytest.approx(200)
    assert timeline.in_flight(points=60).gaps == series.gaps
    assert timeline.active == pytest.approx(20, abs=0.5)


def test_a_pause_within_a_run_stays_on_the_chart() -> None:
    timeline = Timeline()
    for i in range(600):  # an hour at a row per 6 s, with 6 minutes without answers (an outage)
        if not 300 <= i < 360:
            timeline.add(T0 + i * 6, 50.0, sent=True)
    assert timeline.rows_per_second(points=60).gaps == ()
    assert timeline.active == pytest.approx(timeline.span, abs=1)
