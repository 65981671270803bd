"""Stopping a run, said once and seen by whatever waits on a row's behalf.

``StopToken.stop()`` ends a run's intake (the first SIGINT/SIGTERM/SIGHUP, a fatal error, or the
caller's ``Run.stop()``). Waits that are worth cutting short — a retry's backoff, a
``Retry-After`` pause, a rate limiter's slot, an outage probe — go through ``token.sleep``, which
returns early when the run stops; the code after it looks at ``token.stopped`` and leaves the row
unrecorded. Nothing is raised through the waiting code, and an injected sleep (a test's fake
clock) is raced against the token exactly like ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class StopToken:
    """A one-way switch from "running" to "stopping", with a sleep that watches it."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._sleep = sleep
        self._stopped = False
        self._event: asyncio.Event | None = None

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        self._stopped = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Return once the run is stopping."""
        if self._stopped:
            return
        await self._stopping().wait()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the run stops meanwhile (then ``stopped`` is True)."""
        if self._stopped:
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping().wait())
        try:
            await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()

    def _stopping(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            if self._stopped:
                self._event.set()
        return self._event
