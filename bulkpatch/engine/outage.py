"""Telling "this row failed" from "every row will fail": the outage gate, and the first-rows guard.

When ``threshold`` attempts in a row, across rows, cannot even connect, the API is taken for
unreachable: from then on one attempt at a time probes it, with growing waits between probes,
while the others wait behind it without spending their attempts. The first answer of any kind
opens the gate again. When the outage lasts longer than ``max_outage`` seconds the run stops
with ``ApiUnreachable``; the rows that were waiting are left unrecorded, so the same command
sends them once the API is back.

``FirstRowsGuard`` watches the first rows sent: when all of them fail with one HTTP status, the
URL is most likely wrong (a 404 for every workload), and the run stops before it spends the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bulkpatch.errors import ApiUnreachable, WrongTarget
from bulkpatch.records.ledger import RowResult, Status

#: seconds between probes: doubling from the first, up to the last
_PROBE_WAITS = (1.0, 2.0, 4.0, 8.0, 15.0)
#: less time than this left of the outage allowance counts as none
_TOO_SHORT = 0.01


class OutageGate:
    """Shared by all attempts of a run; see the module docstring."""

    def __init__(
        self,
        *,
        threshold: int = 10,
        max_outage: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: Callable[[str, dict[str, object]], None] | None = None,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold}")
        if max_outage < 0:
            raise ValueError(f"max_outage must not be negative, got {max_outage}")
        self.threshold = threshold
        self.max_outage = max_outage
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._on_change = on_change
        self._failures = 0
        #: monotonic time the outage was declared, or None while the API answers
        self._since: float | None = None
        self._since_wall = 0.0
        self._probes = 0
        self.probe = asyncio.Lock()
        #: set once the outage lasted too long: every waiting attempt raises it
        self.gave_up: ApiUnreachable | None = None

    @property
    def active(self) -> bool:
        return self._since is not None

    @property
    def down_for(self) -> float:
        """Seconds since the API stopped answering, or 0 while it answers."""
        return 0.0 if self._since is None else self._clock() - self._since

    def answered(self) -> None:
        """An attempt got an HTTP answer (any status): the API is there."""
        self._failures = 0
        if self._since is not None:
            down = self._clock() - self._since
            self._since = None
            self._emit("outage_ended", {"down_s": round(down, 1)})

    def cannot_connect(self, error: str) -> bool:
        """Count a failed connection; True when the API is (now) taken for unreachable."""
        self._failures += 1
        if self._since is None and self._failures >= self.threshold:
            self._since = self._clock()
            self._since_wall = self._wall_clock()
            self._probes = 0
            self._emit("outage_started", {"failures": self._failures, "error": error})
        self.last_error = error
        return self._since is not None

    async def wait_before_probe(self) -> None:
        """Wait before the next probe; raise ``ApiUnreachable`` once the outage is too long."""
        assert self._since is not None
        wait = _PROBE_WAITS[min(self._probes, len(_PROBE_WAITS) - 1)]
        self._probes += 1
        left = self.max_outage - (self._clock() - self._since)
        if left < _TOO_SHORT:  # a sliver of time left would only ask for a last pointless probe
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self._since_wall))
            self.gave_up = ApiUnreachable(f"API unreachable since {when} ({self.last_error})")
            raise self.gave_up
        await self._sleep(min(wait, left))

    last_error = ""

    def _emit(self, event: str, fields: dict[str, object]) -> None:
        if self._on_change is not None:
            self._on_change(event, fields)


#: the first rows sent: when all of them fail with one status, the target is probably wrong
WRONG_TARGET_ROWS = 50


class FirstRowsGuard:
    """``see(result)`` for each row sent, while ``watching``; returns ``WrongTarget`` to stop on."""

    def __init__(self, rows: int = WRONG_TARGET_ROWS) -> None:
        self.rows = rows
        #: False once a row succeeded or failed differently: the target is fine
        self.watching = True
        self._count = 0
        self._status: int | None = None
        self._error = ""

    def see(self, result: RowResult) -> WrongTarget | None:
        status = result.http_status
        if result.status is not Status.FAILED or status is None or (self._count and status != self._status):
            self.watching = False
            return None
        self._count += 1
        self._status, self._error = status, self._error or result.error or ""
        if self._count < self.rows:
            return None
        self.watching = False
        return WrongTarget(
            f"the first {self._count} rows sent all failed with HTTP {status} ({self._error});"
            " check --base-url and --path"
        )
