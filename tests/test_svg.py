from __future__ import annotations

import re

import pytest

from bulkpatch.records.svg import Line, bar_chart, column_chart, compact, line_chart, nice_ticks, number


@pytest.mark.parametrize(
    ("high", "ticks"),
    [
        (8.4, [0, 2, 4, 6, 8, 10]),
        (260, [0, 100, 200, 300]),
        (0.3, [0, 0.1, 0.2, 0.3]),
        (12_000, [0, 2500, 5000, 7500, 10_000, 12_500]),
        (0, [0, 1]),
    ],
)
def test_ticks_fall_on_round_values(high: float, ticks: list[float]) -> None:
    assert nice_ticks(high) == pytest.approx(ticks)


def test_numbers_read_like_numbers() -> None:
    assert [number(v) for v in (1200, 2.5, 0.25, 12.34, 0.0)] == ["1,200", "2.5", "0.25", "12.3", "0"]


def test_text_from_a_ledger_is_escaped_in_every_chart() -> None:
    hostile = "<script>alert(1)</script>&"
    charts = [
        line_chart(hostile, [Line(hostile, "#000", [1, 2]), Line("b", "#111", [2, 1])], x0=0, step=1,
                   x_label=hostile, y_label=hostile, reference=(3, hostile)),
        column_chart(hostile, [hostile], [3], x_label=hostile, y_label=hostile, color="#000"),
        bar_chart(hostile, [(hostile, 3, "#000")], unit=hostile),
    ]  # fmt: skip
    for chart in charts:
        assert "<script" not in chart and "&lt;script&gt;" in chart
        assert chart.startswith("<svg") and chart.endswith("</svg>")
        assert not re.search(r"(src|href)=", chart)


def test_a_line_chart_holds_each_value_for_its_step() -> None:
    chart = line_chart("t", [Line("a", "#000", [4.0, 8.0])], x0=0, step=1, x_label="s", y_label="n")
    (points,) = re.findall(r'<polyline points="([^"]+)"', chart)
    ys = [float(p.split(",")[1]) for p in points.split()]
    # Two values, each drawn flat over its step: four points, two heights.
    assert len(ys) == 4 and ys[0] == ys[1] and ys[2] == ys[3] and ys[2] < ys[0]


def test_axis_ticks_stay_short() -> None:
    assert [compact(v) for v in (950, 9_999, 12_000, 400_000, 2_500_000, 3e9)] == [
        "950", "9,999", "12k", "400k", "2.5M", "3G",
    ]  # fmt: skip
