"""When the server's answers call for slowing the whole run down, and by how much.

Real APIs answer a background of 429s and 503s that belong to one row, not to the load: a lock
on that object, a node restarting, a per-object quota. Each such row already waits its own
``Retry-After`` or backoff in the sender. Slowing *every* row down for it costs the whole run
(issue #12 measured 79x), so the run reacts only to a **pattern**: many overload answers that
are a large share of the recent ones. Evidence is the answers of the last ``window`` seconds,
at most ``window_answers`` of them, so that at high request rates the evidence is the last
fraction of a second and a real rate limit is seen after a few dozen rejections.

On a pattern, and at most once per ``cooldown``, the concurrency limit shrinks gently (x0.9,
the backoff of Netflix concurrency-limits' AIMD) down to a floor that still makes progress; a
pattern of 429s also caps the rate at 90% of the successes counted in one second up to the
pattern (what the server accepted; counted on for a second, as admitted requests still answer);
and a ``Retry-After`` then pauses every worker. Without a pattern the
limit grows back by one per limit's worth of successes, and a learned rate by 5% a second up
to 97% of the rate the server refused; it probes beyond only after ``probe_after`` seconds
without a single 429.

Everything here takes the time as an argument: it is pure bookkeeping, tested on a fake clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any


class Answer(IntEnum):
    """What one request came back with, as far as flow control cares."""

    #: a 2xx
    OK = 0
    #: a 503 (the server says it is overloaded)
    OVERLOADED = 1
    #: a 429 (the server says this client is over its rate limit)
    RATE_LIMITED = 2
    #: any other status: the server answered, so it counts against the share of overloads
    OTHER = 3


@dataclass(frozen=True, slots=True)
class FlowPolicy:
    """The knobs of flow control. The defaults keep a run at full speed when a fifth of all
    answers are per-row 429/503s (issue #12's case), and bring it under a server's rate limit
    after 25 429s (plus what is in flight)."""

    #: seconds of answers that count as evidence (and the longest a stale pattern lasts)
    window: float = 3.0
    #: at most this many of the latest answers count, so evidence is fresh at high rates
    window_answers: int = 100
    #: a pattern needs at least this many 429/503 answers in the window (K) ...
    min_overloads: int = 20
    #: ... making up at least this share of the window's answers (X): pause, shrink concurrency
    overload_share: float = 0.4
    #: a rate is learned when at least ``min_overloads`` 429s are this share of the answers
    rate_limited_share: float = 0.25
    #: shortest time between two decreases (of the concurrency limit, of the learned rate)
    cooldown: float = 3.0
    #: the concurrency limit is multiplied by this on a pattern
    backoff: float = 0.9
    #: the concurrency limit never drops below this share of ``--concurrency`` (nor below 1)
    floor: float = 0.25
    #: a learned rate is this share of the successes counted in the second before the pattern
    rate_backoff: float = 0.9
    #: a learned rate is multiplied by this after each second without a 429 pattern ...
    rate_recovery: float = 1.05
    #: ... up to this share of the rate the server refused
    rate_ceiling: float = 0.97
    #: seconds without any 429 before a learned rate probes above that ceiling ...
    probe_after: float = 30.0
    #: ... by this factor a second
    probe_step: float = 1.005

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value <= 0:
                raise ValueError(f"FlowPolicy.{f.name} must be positive, got {value}")
        for name in ("overload_share", "rate_limited_share", "backoff", "floor", "rate_backoff"):
            if getattr(self, name) > 1:
                raise ValueError(f"FlowPolicy.{name} must be at most 1, got {getattr(self, name)}")


#: called with ("concurrency" or "rate", new value, why) when either changes
OnChange = Callable[[str, int, str], None]


#: answers of one kind this close together share a window entry (seconds)
_GRAIN = 0.01
#: window entries kept at most between two prunes (memory stays bounded at any speed)
_MAX_ENTRIES = 256


class FlowControl:
    """Weighs the answers against a ``FlowPolicy`` and keeps the concurrency limit and the
    learned rate they call for. ``answered()`` after every request; read ``limit`` and
    ``learned_rate``; ask ``overloaded()`` before honouring a ``Retry-After`` for everyone."""

    def __init__(
        self, concurrency: int, policy: FlowPolicy | None = None, *, on_change: OnChange | None = None
    ):
        self.policy = p = policy or FlowPolicy()
        self.max_limit = concurrency
        self.min_limit = max(1, math.ceil(p.floor * concurrency))
        #: the concurrency limit, fractional so that additive increase can be gradual
        self.limit = float(concurrency)
        #: a requests-per-second cap learned from a pattern of 429s, or None
        self.learned_rate: float | None = None
        self._on_change = on_change
        # Answers of the same kind within ``_GRAIN`` seconds share one entry [time, kind, count]:
        # at thousands of answers a second, one append per answer cost more than the request.
        self._window: deque[list[Any]] = deque()
        self._answers = 0
        self._overloads = 0
        self._rate_limited = 0
        self._ok_times: deque[list[float]] = deque()  # successes of the last second: [time, count]
        self._oks = 0
        self._refused = 0.0
        self._last_decrease = -math.inf
        self._last_rate_cut = -math.inf
        self._last_rate_step = -math.inf
        self._last_429 = -math.inf

    def answered(self, now: float, answer: Answer) -> bool:
        """Count one answer; True if the limit or the learned rate changed."""
        self._add(now, answer)
        if answer is Answer.OK:
            refined = now - self._last_rate_cut < 1.0 and self._refine_rate(now)
            return self._grow(now) or refined
        if answer is Answer.OTHER:
            return False
        changed = False
        if answer is Answer.RATE_LIMITED:
            self._last_429 = now
            if self._rate_pattern():
                if now - self._last_rate_cut >= self.policy.cooldown:
                    changed = self._cut_rate(now)
                else:
                    changed = self._refine_rate(now)
        if self._overload_pattern() and now - self._last_decrease >= self.policy.cooldown:
            changed = self._shrink(now) or changed
        return changed

    def overloaded(self, now: float) -> bool:
        """True while the recent answers show a pattern of overload (or of 429s)."""
        self._prune(now)
        return self._overload_pattern() or self._rate_pattern()

    def _overload_pattern(self) -> bool:
        n = self._overloads
        return n >= self.policy.min_overloads and n >= self.policy.overload_share * self._answers

    def _rate_pattern(self) -> bool:
        n = self._rate_limited
        return n >= self.policy.min_overloads and n >= self.policy.rate_limited_share * self._answers

    def _add(self, now: float, answer: Answer) -> None:
        window = self._window
        last = window[-1] if window else None
        if last is not None and last[1] is answer and now - last[0] < _GRAIN:
            last[2] += 1
        else:
            window.append([now, answer, 1])
        self._answers += 1
        if answer is Answer.OVERLOADED:
            self._overloads += 1
        elif answer is Answer.RATE_LIMITED:
            self._overloads += 1
            self._rate_limited += 1
        elif answer is Answer.OK:
            ok_times = self._ok_times
            if ok_times and now - ok_times[-1][0] < _GRAIN:
                ok_times[-1][1] += 1
            else:
                ok_times.append([now, 1])
                while ok_times[0][0] <= now - 1.0:
                    self._oks -= int(ok_times.popleft()[1])
            self._oks += 1
        if answer is not Answer.OK or len(window) > _MAX_ENTRIES:
            # An OK at full speed changes no pattern: the window is pruned when next read.
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop the answers that no longer count: too old, or beyond the latest ``window_answers``."""
        window = self._window
        oldest = now - self.policy.window
        cap = self.policy.window_answers
        while window and (self._answers > cap or window[0][0] <= oldest):
            entry = window[0]
            # Over the cap, the oldest answers go one at a time; out of the window, all of them.
            gone = entry[2] if entry[0] <= oldest else min(entry[2], self._answers - cap)
            entry[2] -= gone
            if entry[2] == 0:
                window.popleft()
            self._answers -= gone
            if entry[1] is Answer.OVERLOADED:
                self._overloads -= gone
            elif entry[1] is Answer.RATE_LIMITED:
                self._overloads -= gone
                self._rate_limited -= gone

    def _grow(self, now: float) -> bool:
        changed = False
        below = self.limit < self.max_limit
        if below or self.learned_rate is not None:
            self._prune(now)  # the patterns below read the window
        if below and not self._overload_pattern():
            before = int(self.limit)
            self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)
            if int(self.limit) != before:
                self._changed("concurrency", self.limit, "raised after successes")
                changed = True
        # A step waits for the evidence to clear (the burst that taught the rate, say).
        if self.learned_rate is not None and now - self._last_rate_step >= 1.0 and not self._rate_pattern():
            self._last_rate_step = now
            changed = self._raise_rate(now) or changed
        return changed

    def _raise_rate(self, now: float) -> bool:
        p = self.policy
        learned = self.learned_rate
        if learned is None:
            return False
        ceiling = p.rate_ceiling * self._refused
        if learned < ceiling:
            learned = min(learned * p.rate_recovery, ceiling)
        elif now - self._last_429 >= p.probe_after:
            learned *= p.probe_step  # a long quiet: the server may take more now
        else:
            return False
        self.learned_rate = learned
        self._changed("rate", learned, "raised after a second without a pattern of 429s")
        return True

    def _accepted(self, now: float) -> int:
        """Successes counted in the last second: what the server let through."""
        ok_times = self._ok_times
        while ok_times and ok_times[0][0] <= now - 1.0:
            self._oks -= int(ok_times.popleft()[1])
        return self._oks

    def _cut_rate(self, now: float) -> bool:
        self._last_rate_cut = self._last_rate_step = now
        accepted = self._accepted(now)
        if accepted < 1:
            return False
        self._refused = float(accepted)
        self.learned_rate = self.policy.rate_backoff * accepted
        why = f"set to {self.policy.rate_backoff:.0%} of what the server accepted before its 429s"
        self._changed("rate", self.learned_rate, why)
        return True

    def _refine_rate(self, now: float) -> bool:
        # Requests the server admitted before its 429s may still be answering when the pattern
        # is seen: for a second after it, what the server accepted can only be counted upwards.
        accepted = self._accepted(now)
        if self.learned_rate is None or accepted <= self._refused:
            return False
        self._refused = float(accepted)
        self.learned_rate = self.policy.rate_backoff * accepted  # quietly: one event per cut
        return True

    def _shrink(self, now: float) -> bool:
        self._last_decrease = now
        before = int(self.limit)
        self.limit = max(float(self.min_limit), self.limit * self.policy.backoff)
        if int(self.limit) == before:
            return False
        self._changed("concurrency", self.limit, "lowered after a pattern of overload answers")
        return True

    def _changed(self, what: str, value: float, why: str) -> None:
        if self._on_change is not None:
            self._on_change(what, int(value), why)
