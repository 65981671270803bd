"""Rows of one key reach the API in input order.

Workers take rows in input order, but a row that is retried could otherwise land after a later
row of the same key, so the older value would win. A row therefore waits while an earlier row of
its key is still in flight. The wait costs nothing for distinct keys (one dict entry per row in
flight). ``SeenKeys`` counts keys that appear more than once in the whole input, in 16 bytes a
key or less.
"""

from __future__ import annotations

import asyncio
from array import array


class _Turn:
    """One in-flight row's place in its key's queue."""

    __slots__ = ("_done", "_future")

    def __init__(self) -> None:
        self._done = False
        self._future: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        if self._done:
            return
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        await self._future

    def finish(self) -> None:
        self._done = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)


class KeyOrder:
    """``turn = take(key)`` when a row is taken (in input order), ``await wait(turn)``, then ``done``."""

    def __init__(self) -> None:
        self._last: dict[str, _Turn] = {}
        #: rows that waited for an earlier row of their key
        self.waited = 0

    def take(self, key: str) -> tuple[_Turn, _Turn | None]:
        """Register a row of ``key``; returns its turn and the turn it must wait for, if any."""
        turn = _Turn()
        before = self._last.get(key)
        self._last[key] = turn
        if before is not None:
            self.waited += 1
        return turn, before

    def done(self, key: str, turn: _Turn) -> None:
        if self._last.get(key) is turn:
            del self._last[key]
        turn.finish()


#: what ``SeenKeys.visit`` says of a key: seen on an earlier row, sent by an earlier row
SEEN, SENT = 1, 2
# The two low bits of a slot: the key came more than once (counted), an earlier row was sent.
_TWICE, _SENT_BIT, _FLAGS = 1, 2, 3


class SeenKeys:
    """An exact-enough set of 64-bit key hashes: which keys came before, and which were sent.

    Open addressing in one array: Python's ``set`` would cost ~60 bytes a key, this costs 16.
    """

    def __init__(self) -> None:
        self._slots = array("q", bytes(8 * 1024))
        self._used = 0
        self._last = -1
        #: keys that appeared more than once
        self.repeated = 0

    def visit(self, key: str) -> int:
        """Note a row of ``key``; 0 for a new key, else ``SEEN``, with ``SENT`` if a row was sent."""
        h = (hash(key) & ~_FLAGS) or 4
        slots = self._slots
        mask = len(slots) - 1
        i = h & mask
        while True:
            value = slots[i]
            if value == 0:
                slots[i] = h
                self._used += 1
                if self._used * 4 > 3 * len(slots):
                    self._grow()
                    i = self._find(h)
                self._last = i
                return 0
            if value & ~_FLAGS == h:
                if not value & _TWICE:
                    slots[i] = value | _TWICE
                    self.repeated += 1
                self._last = i
                return SEEN | (SENT if value & _SENT_BIT else 0)
            i = (i + 1) & mask

    def sent(self) -> None:
        """Mark the key of the last ``visit`` as sent by this run."""
        self._slots[self._last] |= _SENT_BIT

    def _find(self, h: int) -> int:
        slots = self._slots
        mask = len(slots) - 1
        i = h & mask
        while slots[i] & ~_FLAGS != h:
            i = (i + 1) & mask
        return i

    def _grow(self) -> None:
        old = self._slots
        slots = self._slots = array("q", bytes(16 * len(old)))
        mask = len(slots) - 1
        for value in old:
            if value:
                i = (value & ~_FLAGS) & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = value
