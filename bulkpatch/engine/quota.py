"""Pacing to the quota a server announces in its answers, so that no 429 is needed to find it.

Many APIs say in every answer how many requests are left and when the count resets: the IETF
httpapi draft's ``RateLimit: limit=100, remaining=50, reset=5`` (or ``"q";r=50;t=5``) with
``RateLimit-Policy: 100;w=60``, its older ``RateLimit-Limit``/``-Remaining``/``-Reset``, and the
``X-RateLimit-*`` headers of GitHub, HubSpot and others. A reset is delta seconds, except that a
value above 10^9 can only be a Unix time (GitHub's ``X-RateLimit-Reset`` is one).

The pace: the quota left, less the requests still in flight (they will spend it too), spread over
the time to the reset; never more than the announced limit per window (what is left says so),
and never faster than 1.5 times limit/window (no burst at a window's end). When nothing is left,
every worker waits for the reset. Resets are whole seconds, so for short windows the reset time is
refined from where a window was seen to begin (the count went up) and the window's length (the
policy's ``w``, else the time between two such beginnings): the phase, once seen, is kept, so
waiting for a reset does not drift a little later every window.

Everything here takes the time as an argument: pure bookkeeping, tested on a fake clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

#: a reset above this is a Unix time, not delta seconds
_EPOCH = 1e9
#: how much faster than limit/window the quota left may be spent, to catch up within a window
_CATCH_UP = 1.5
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class Quota:
    """What one answer announced."""

    #: requests left in the current window
    remaining: int
    #: seconds from the answer until the quota is whole again
    reset: float
    #: requests per window, when announced
    limit: int | None = None
    #: the window in seconds, when announced (the policy's ``w``)
    window: float | None = None
    #: which headers said it: "ietf", "legacy" (RateLimit-*), "x" (X-RateLimit-*)
    form: str = "ietf"


def parse_quota(headers: Mapping[str, str], wall_now: float) -> Quota | None:
    """The quota in ``headers`` (lower-case names), or None if none is announced (or unreadable).

    ``wall_now`` is the Unix time, to turn a reset given as a Unix time into seconds from now.
    """
    policy = headers.get("ratelimit-policy")
    limit, window = _policy(policy) if policy else (None, None)
    combined = headers.get("ratelimit")
    if combined is not None:
        params = _params(combined)
        remaining = _int(params.get("remaining", params.get("r")))
        reset = _float(params.get("reset", params.get("t")))
        limit = _int(params.get("limit", params.get("l"))) or limit
        form = "ietf"
    elif "ratelimit-remaining" in headers:
        remaining = _int(headers.get("ratelimit-remaining"))
        reset = _float(headers.get("ratelimit-reset"))
        limit_text = headers.get("ratelimit-limit")
        if limit_text is not None:
            # draft-03: "100, 100;w=60" (the limit, then the policies)
            first, policy_limit, policy_window = _legacy_limit(limit_text)
            limit = first or policy_limit or limit
            window = window or policy_window
        form = "legacy"
    elif "x-ratelimit-remaining" in headers:
        remaining = _int(headers.get("x-ratelimit-remaining"))
        reset = _float(headers.get("x-ratelimit-reset"))
        limit = _int(headers.get("x-ratelimit-limit")) or limit
        form = "x"
    else:
        return None
    if remaining is None or reset is None:
        return None
    if reset > _EPOCH:
        reset = reset - wall_now
    return Quota(remaining, max(0.0, reset), limit, window, form)


def _params(text: str) -> dict[str, str]:
    """``limit=100, remaining=50, reset=5`` or ``"default";r=50;t=5``: the first of each key."""
    found: dict[str, str] = {}
    for part in re.split(r"[,;]", text):
        name, eq, value = part.partition("=")
        if eq:
            found.setdefault(name.strip().lower(), value.strip().strip('"'))
    return found


def _policy(text: str) -> tuple[int | None, float | None]:
    """``100;w=60`` (draft-03..05) or ``"default";q=100;w=60`` (later drafts): limit, window."""
    first = text.split(",")[0]
    params = _params(first)
    limit = _int(params.get("q"))
    if limit is None:
        head = first.split(";")[0].strip()
        limit = _int(head) if head.isdigit() else None
    return limit, _float(params.get("w"))


def _legacy_limit(text: str) -> tuple[int | None, int | None, float | None]:
    items = [item.strip() for item in text.split(",")]
    first = _int(items[0]) if items and items[0].isdigit() else None
    for item in items:
        if ";" in item:
            limit, window = _policy(item)
            return first, limit, window
    return first, None, None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    match = _NUMBER.search(text)
    return int(float(match.group())) if match else None


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    match = _NUMBER.search(text)
    return float(match.group()) if match else None


@dataclass(frozen=True, slots=True)
class Pace:
    """What an announcement calls for: a rate cap, and maybe a wait for everyone until the reset."""

    #: requests per second at most, or None for no cap
    rate: float | None
    #: seconds every worker should wait (nothing left before the reset), or 0
    hold: float = 0.0


class AnnouncedQuota:
    """Turns each announced ``Quota`` into a ``Pace``; ``seen()`` after every answer that has one."""

    def __init__(self) -> None:
        #: the latest announced limit and window (the window may be learned), for display and log
        self.limit: int | None = None
        self.window: float | None = None
        self.form: str | None = None
        self._remaining: int | None = None
        self._last_answer = -math.inf
        self._start: float | None = None  # when the current window began, once seen
        self._deadline: float | None = None  # when the current window ends, as last estimated
        self._learned_window: float | None = None
        self._policy_window: float | None = None

    def seen(self, now: float, quota: Quota, in_flight: int = 0) -> tuple[Pace, bool]:
        """The pace ``quota`` calls for, and whether the announced limit or window changed."""
        before = (self.limit, self.window, self.form)
        self._note_window_start(now, quota, in_flight)
        self._remaining = quota.remaining
        self._last_answer = now
        if quota.limit is not None:
            self.limit = quota.limit
        self.form = quota.form
        self._policy_window = quota.window
        learned = self._learned_window
        # A learned window moves a little every window: shown (and logged) to a tenth of a second.
        self.window = quota.window or (round(learned, 1) if learned else None)
        deadline = self._reset_at(now, quota)
        self._deadline = deadline
        left = deadline - now
        # Behind the pace (a slow answer, a pause), the rest of the window may go a little faster;
        # the count left keeps the window's total within the limit.
        cap = _CATCH_UP * self.limit / self.window if self.limit and self.window else None
        spare = quota.remaining - in_flight
        if spare <= 0 and self._just_reset(now):
            # Admitted before the window turned, answered after: it speaks of the old window.
            pace = Pace(cap)
        elif spare <= 0:
            # Nothing left: everyone waits for the reset, then goes at the announced pace.
            pace = Pace(cap, hold=max(left, 0.0))
        elif left <= 0:
            pace = Pace(cap)
        elif self._start is None and cap is not None:
            # The window's phase is not known yet, and a whole-second reset may be up to a second
            # late: spreading what is left over it would slow down for nothing. The window's pace.
            pace = Pace(min(cap / _CATCH_UP, max(spare / left, 1 / left)))
        else:
            rate = spare / left
            pace = Pace(min(rate, cap) if cap else rate)
        return pace, (self.limit, self.window, self.form) != before

    def _note_window_start(self, now: float, quota: Quota, in_flight: int) -> None:
        """The count went up: a new window began between the last answer and this one."""
        last = self._remaining
        # Answers overtaking each other raise the count by what was in flight then: not a reset.
        least = max(2 * in_flight, 2, (quota.limit or self.limit or 0) // 10)
        if last is None or quota.remaining <= last + least:
            return
        previous, deadline = self._start, self._deadline
        if deadline is not None and self._last_answer <= deadline <= now:
            start = deadline  # the reset came when expected: keep the phase, no drift
        else:
            start = now
        if previous is not None and quota.window is None:
            period = start - previous
            learned = self._learned_window
            if learned is None:
                self._learned_window = period if period > 0 else None
            elif 0.8 * learned <= period <= 1.25 * learned:
                # Windows may pass unseen (a multiple) or a reset be misread (shorter): only a
                # gap close to the window refines it.
                self._learned_window = 0.8 * learned + 0.2 * period
        self._start = start

    def _just_reset(self, now: float) -> bool:
        """True within the first tenth of a window (at most 0.25 s) that began as the phase says."""
        window = self.window_s
        start = self._start
        if window is None or start is None:
            return False
        since = (now - start) % window
        return since < min(0.1 * window, 0.25)

    @property
    def window_s(self) -> float | None:
        """The window's length in seconds, announced or learned, if known."""
        return self._policy_window or self._learned_window

    def _reset_at(self, now: float, quota: Quota) -> float:
        """When the quota resets: the header's word, refined by the window's phase when known."""
        told = now + quota.reset
        window = self.window_s
        start = self._start
        if window is None or start is None:
            return told
        ends = start + window * max(1, math.ceil((now - start) / window))
        # Whole-second resets are up to a second late (or early): trust the phase within that.
        return ends if abs(ends - told) <= 1.0 else told

    def describe(self) -> str | None:
        """``300 per 1 s`` for a progress line, or None before any announcement."""
        if self.limit is None:
            return None
        if self.window is None:
            return f"{self.limit:,}"
        return f"{self.limit:,} per {self.window:g} s"
