"""An event loop that never waits: when nothing is ready it jumps to its next timer.

Timing tests of the pacer run on it, so that "no one-second window holds more than R requests"
is measured in a time no other process can stretch: a loaded machine makes such a test slower,
never wrong. Only for tests without real sockets (the loop polls, it does not wait, for I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock


class VirtualClock:
    """``with VirtualClock().running() as clock:`` inside a coroutine: from then on
    ``loop.time()`` and ``asyncio.sleep`` use virtual seconds; ``clock()`` reads them."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    @contextlib.contextmanager
    def running(self) -> Iterator[VirtualClock]:
        loop = asyncio.get_running_loop()
        selector: Any = loop._selector  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> Any:
            if timeout is None:
                raise RuntimeError("virtual time: every task is waiting and no timer is set")
            self.now += max(0.0, timeout)
            return real_select(0)

        with mock.patch.object(selector, "select", select), mock.patch.object(loop, "time", self):
            yield self
