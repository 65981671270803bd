"""Hand-drawn SVG charts for the HTML report: a line chart over time, a column chart, bars.

A report must open from a ticket attachment on a machine with no network, so its charts are
inline SVG written here, not a JavaScript library. Each chart has a title, axes with labels and
units, and ticks at round values (1, 2, 2.5 or 5 times a power of ten). Every text that reaches
the markup goes through ``html.escape``: labels may come from a ledger, which is untrusted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 540, 270
LEFT, RIGHT, TOP, BOTTOM = 62, 18, 40, 46
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif"
GRID, AXIS, INK, MUTED = "#e3e6ea", "#9aa3ad", "#1f2933", "#5f6b7a"


@dataclass(frozen=True, slots=True)
class Line:
    """One series of a line chart: ``values[i]`` at ``x0 + i * step``."""

    label: str
    color: str
    values: Sequence[float]
    fill: bool = False


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high``, about ``count`` steps."""
    if not high > 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    steps = math.ceil(high / step - 1e-9)
    return [i * step for i in range(steps + 1)]


def number(value: float) -> str:
    """A tick or value label: thousands separated, decimals only when needed."""
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def compact(value: float) -> str:
    """An axis tick in few characters: ``950``, ``12k``, ``2.5M``."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            scale = 1e3 if suffix == "k" else size
            return number(round(value / scale, 2)) + ("k" if suffix == "k" else suffix)
    return number(value)


def line_chart(
    title: str,
    lines: Sequence[Line],
    *,
    x0: float,
    step: float,
    x_label: str,
    y_label: str,
    x_format: Callable[[float], str] = number,
    reference: tuple[float, str] | None = None,
    breaks: Sequence[tuple[float, str]] = (),
) -> str:
    """Series over a numeric x axis (e.g. seconds since the start); ``reference`` is a dashed
    horizontal line with its label (a configured limit); ``breaks`` are ``(x, label)`` where
    the axis skips a stretch (idle time cut out), drawn as dotted vertical lines."""
    points = max((len(line.values) for line in lines), default=0)
    x_high = x0 + step * max(points, 1)
    y_high = max((v for line in lines for v in line.values), default=0.0)
    if reference is not None:
        y_high = max(y_high, reference[0])
    y_ticks = nice_ticks(y_high * 1.05 if y_high else 1.0)
    x_ticks = [t for t in nice_ticks(x_high - x0) if t <= x_high - x0 + 1e-9]
    plot = _Plot(x0, x_high, y_ticks[-1])
    out = [_open(title), *_y_axis(plot, y_ticks, y_label)]
    for tick in x_ticks:
        x = plot.x(x0 + tick)
        out.append(_line(x, plot.bottom, x, plot.bottom + 4, AXIS))
        out.append(_text(x, plot.bottom + 17, x_format(tick), anchor="middle"))
    out.append(_text((LEFT + WIDTH - RIGHT) / 2, HEIGHT - 8, x_label, anchor="middle", color=MUTED))
    for line in lines:
        # Each value holds for its whole step: a stepped line shows the binning honestly.
        coords: list[str] = []
        for i, value in enumerate(line.values):
            y = plot.y(value)
            coords += [f"{plot.x(x0 + i * step):.1f},{y:.1f}", f"{plot.x(x0 + (i + 1) * step):.1f},{y:.1f}"]
        if not coords:
            continue
        if line.fill:
            first, last = plot.x(x0), plot.x(x0 + len(line.values) * step)
            area = f"{first:.1f},{plot.bottom:.1f} {' '.join(coords)} {last:.1f},{plot.bottom:.1f}"
            out.append(f'<polygon points="{area}" fill="{line.color}" fill-opacity="0.15" stroke="none"/>')
        out.append(
            f'<polyline points="{" ".join(coords)}" fill="none" stroke="{line.color}" '
            'stroke-width="1.6" stroke-linejoin="round"/>'
        )
    for x_break, label in breaks:
        x = plot.x(x0 + x_break)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{plot.bottom}" stroke="{MUTED}" '
            'stroke-width="1.2" stroke-dasharray="2 3"/>'
        )
        out.append(_text(x + 4, TOP + 10, label, size=10, color=MUTED))
    if reference is not None:
        y = plot.y(reference[0])
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#c2410c" '
            'stroke-width="1.2" stroke-dasharray="5 4"/>'
        )
        out.append(_text(WIDTH - RIGHT - 4, y - 5, reference[1], anchor="end", color="#c2410c"))
    out += _legend([(line.label, line.color) for line in lines if len(lines) > 1])
    out.append("</svg>")
    return "\n".join(out)


def column_chart(
    title: str, labels: Sequence[str], values: Sequence[int], *, x_label: str, y_label: str, color: str
) -> str:
    """One column per category (e.g. a histogram's bins), its count written above it."""
    y_ticks = nice_ticks(max(values, default=0) * 1.12 or 1.0)
    plot = _Plot(0, max(len(values), 1), y_ticks[-1])
    out = [_open(title), *_y_axis(plot, y_ticks, y_label)]
    slot = plot.width / max(len(values), 1)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + i * slot
        y = plot.y(value)
        out.append(
            f'<rect x="{x + slot * 0.12:.1f}" y="{y:.1f}" width="{slot * 0.76:.1f}" '
            f'height="{plot.bottom - y:.1f}" fill="{color}" rx="2"/>'
        )
        if value:
            out.append(_text(x + slot / 2, y - 4, number(value), anchor="middle", size=10))
        out.append(_text(x + slot / 2, plot.bottom + 15, label, anchor="middle", size=10))
    out.append(_text((LEFT + WIDTH - RIGHT) / 2, HEIGHT - 8, x_label, anchor="middle", color=MUTED))
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(title: str, bars: Sequence[tuple[str, int, str]], *, unit: str) -> str:
    """Horizontal bars ``(label, value, color)``, each with its value and share of the total."""
    total = sum(value for _, value, _ in bars) or 1
    high = max((value for _, value, _ in bars), default=0) or 1
    left, right = 96, 150
    span = WIDTH - left - right
    row = min(34.0, (HEIGHT - TOP - 30) / max(len(bars), 1))
    out = [_open(title)]
    out.append(_line(left, TOP, left, TOP + row * len(bars), AXIS))
    for i, (label, value, color) in enumerate(bars):
        y = TOP + i * row
        length = span * value / high
        out.append(_text(left - 8, y + row / 2 + 4, label, anchor="end"))
        out.append(
            f'<rect x="{left}" y="{y + row * 0.18:.1f}" width="{max(length, 0.0):.1f}" '
            f'height="{row * 0.64:.1f}" fill="{color}" rx="2"/>'
        )
        share = f"{number(value)} ({100.0 * value / total:.1f}%)"
        out.append(_text(left + length + 6, y + row / 2 + 4, share))
    out.append(
        _text((left + WIDTH - right) / 2, HEIGHT - 8, f"{unit} (share of all)", anchor="middle", color=MUTED)
    )
    out.append("</svg>")
    return "\n".join(out)


class _Plot:
    """Maps data to the plot area."""

    def __init__(self, x_low: float, x_high: float, y_high: float) -> None:
        self.x_low, self.x_span = x_low, (x_high - x_low) or 1.0
        self.y_high = y_high or 1.0
        self.width = WIDTH - LEFT - RIGHT
        self.bottom = HEIGHT - BOTTOM

    def x(self, value: float) -> float:
        return LEFT + self.width * (value - self.x_low) / self.x_span

    def y(self, value: float) -> float:
        return self.bottom - (self.bottom - TOP) * min(value, self.y_high) / self.y_high


def _open(title: str) -> str:
    return (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'class="chart" style="{FONT}"><title>{escape(title)}</title>\n'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>\n'
        + _text(LEFT, 22, title, size=14, weight="600")
    )


def _y_axis(plot: _Plot, ticks: list[float], label: str) -> list[str]:
    out = []
    for tick in ticks:
        y = plot.y(tick)
        out.append(_line(LEFT, y, WIDTH - RIGHT, y, GRID))
        out.append(_text(LEFT - 6, y + 4, compact(tick), anchor="end"))
    out.append(_line(LEFT, TOP, LEFT, plot.bottom, AXIS))
    out.append(_line(LEFT, plot.bottom, WIDTH - RIGHT, plot.bottom, AXIS))
    middle = (TOP + plot.bottom) / 2
    out.append(
        f'<text transform="translate(15 {middle:.1f}) rotate(-90)" text-anchor="middle" '
        f'font-size="11" fill="{MUTED}">{escape(label)}</text>'
    )
    return out


def _legend(entries: list[tuple[str, str]]) -> list[str]:
    out = []
    x = WIDTH - RIGHT
    for label, color in reversed(entries):
        x -= 7 * len(label) + 28
        out.append(f'<rect x="{x:.0f}" y="12" width="12" height="3" fill="{color}"/>')
        out.append(_text(x + 16, 17, label, size=11))
    return out


def _line(x1: float, y1: float, x2: float, y2: float, color: str) -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" stroke-width="1"/>'
    )


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    size: int = 11,
    color: str = INK,
    weight: str = "normal",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'font-weight="{weight}" fill="{color}">{escape(text)}</text>'
    )
