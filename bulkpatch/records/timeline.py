"""What happened when: rows finished and rows in flight over time, in constant memory.

Every row record carries ``ts``, the time of its outcome, and a sent row ``ms``, how long it took
from its first request to that outcome: so the row was in flight from ``ts - ms`` to ``ts``.
Counting how these intervals overlap gives the run's real concurrency without the engine writing
a single extra record. Time is cut into bins that start fine (50 ms) and double in width whenever
more than ``max_bins`` of them hold something, so a run of a million rows or of a week keeps a
few thousand numbers, and a day with nothing between two runs costs nothing. A bin's in-flight
figure is the time-weighted average over the bin. Idle stretches between runs (a resume the next
morning, a fix-up run a week later) are cut out of the series, and said where, so that the runs
fill the chart instead of two thin spikes.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

#: the finest bin, in seconds
BASE_WIDTH = 0.05
_DAY_MS = 86_400_000.0
#: an idle stretch is cut out when it is this long at least, and a fifth of the active time
MIN_GAP_S = 300.0


@dataclass(frozen=True, slots=True)
class Series:
    """Evenly spaced values: ``values[i]`` covers ``start + i * width`` to the next step."""

    start: float
    width: float
    values: list[float]
    #: idle stretches cut out: (index of the first value after the cut, seconds cut)
    gaps: tuple[tuple[int, float], ...] = ()


class Timeline:
    """Bins ``add``-ed outcomes by time; ``series`` resamples them for a chart."""

    def __init__(self, max_bins: int = 4096) -> None:
        self.width = BASE_WIDTH
        self._max_bins = max_bins
        self._done: dict[int, float] = {}
        self._sent: dict[int, float] = {}
        #: seconds of rows in flight per bin (divide by the width for the average count)
        self._busy: dict[int, float] = {}
        # Times are kept relative to the first one seen: Unix seconds (1.8e9) leave a float only
        # microseconds of precision, and a sum of many small overlaps would show it.
        self._origin: float | None = None
        self._first, self._last = math.inf, -math.inf

    def add(self, ts: float, ms: float | None, sent: bool) -> None:
        """Count one outcome at ``ts``; a sent row with its latency ``ms`` is in flight before it."""
        origin = self._origin
        if origin is None:
            origin = self._origin = float(math.floor(ts))
        ts -= origin
        # A day at most: one absurd latency in a hand-edited ledger must not stretch the chart.
        begin = ts - min(ms, _DAY_MS) / 1000.0 if sent and ms else ts
        if begin < self._first:
            self._first = begin
        if ts > self._last:
            self._last = ts
        while ts - begin > self._max_bins * self.width:
            self._coarsen()
        width = self.width
        at = math.floor(ts / width)
        done = self._done
        done[at] = done.get(at, 0) + 1
        if sent:
            self._sent[at] = self._sent.get(at, 0) + 1
            if ms:
                busy = self._busy
                at = math.floor(begin / width)
                while begin < ts:
                    edge = min((at + 1) * width, ts)
                    busy[at] = busy.get(at, 0.0) + (edge - begin)
                    begin = edge
                    at += 1
        if len(self._busy) > self._max_bins or len(done) > self._max_bins:
            self._coarsen()

    def _coarsen(self) -> None:
        self.width *= 2
        self._done = _halved(self._done)
        self._sent = _halved(self._sent)
        self._busy = _halved(self._busy)

    @property
    def empty(self) -> bool:
        return self._origin is None

    @property
    def first(self) -> float | None:
        """Unix time of the first request sent (or outcome), if any."""
        return None if self._origin is None else self._origin + self._first

    @property
    def last(self) -> float | None:
        """Unix time of the last outcome, if any."""
        return None if self._origin is None else self._origin + self._last

    @property
    def span(self) -> float:
        """Seconds from the first request sent (or outcome) to the last outcome."""
        return 0.0 if self.first is None or self.last is None else self.last - self.first

    @property
    def active(self) -> float:
        """Seconds of the span left once idle stretches are cut out (see ``_cuts``)."""
        if self._origin is None:
            return 0.0
        low, high = math.floor(self._first / self.width), math.floor(self._last / self.width)
        return (high - low + 1 - sum(n for _, n in self._cuts(low, high))) * self.width

    def rows_per_second(self, points: int, *, sent_only: bool = False) -> Series:
        """Rows finished per second, averaged over each of about ``points`` steps."""
        counts = self._sent if sent_only else self._done
        series = self._resample(counts, points)
        return Series(series.start, series.width, [v / series.width for v in series.values], series.gaps)

    def in_flight(self, points: int) -> Series:
        """Rows in flight, time-weighted average over each of about ``points`` steps."""
        series = self._resample(self._busy, points)
        return Series(series.start, series.width, [v / series.width for v in series.values], series.gaps)

    def _resample(self, bins: dict[int, float], points: int) -> Series:
        """Sums of ``bins`` over steps of a whole number of bins, about ``points`` of them, with
        long idle stretches cut out."""
        if self._origin is None:
            return Series(0.0, 1.0, [])
        low = math.floor(self._first / self.width)
        high = math.floor(self._last / self.width)
        cuts = self._cuts(low, high)
        starts = [start for start, _ in cuts]
        removed = list(itertools.accumulate((n for _, n in cuts), initial=0))

        def position(at: int) -> int:
            return at - low - removed[bisect.bisect_right(starts, at)]

        per = max(1, math.ceil((high - low + 1 - removed[-1]) / max(points, 1)))
        values = [0.0] * (position(high) // per + 1)
        for at, value in bins.items():
            slot = position(at) // per
            if 0 <= slot < len(values):
                values[slot] += value
        gaps = tuple((position(start) // per, n * self.width) for start, n in cuts)
        return Series(self._origin + low * self.width, per * self.width, values, gaps)

    def _cuts(self, low: int, high: int) -> list[tuple[int, int]]:
        """``(first busy bin after, idle bins)`` of each idle stretch to cut out."""
        occupied = sorted(self._done.keys() | self._busy.keys())
        shortest = MIN_GAP_S / self.width
        idle = [(b, b - a - 1) for a, b in itertools.pairwise(occupied) if b - a - 1 >= shortest]
        active = high - low + 1 - sum(n for _, n in idle)
        return [(b, n) for b, n in idle if n >= 0.2 * active]


def _halved(bins: dict[int, float]) -> dict[int, float]:
    # floor(t / 2w) == floor(floor(t / w) / 2): merging neighbours is exact.
    out: dict[int, float] = {}
    for at, value in bins.items():
        out[at // 2] = out.get(at // 2, 0.0) + value
    return out
