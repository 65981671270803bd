"""Rows of one key reach the API in input order.

Workers take rows in input order, but a row that is retried could otherwise land after a later
row of the same key, so the older value would win. A row therefore waits while an earlier row of
its key is still in flight. The wait costs nothing for distinct keys (one dict entry per row in
flight). ``SentKeys`` remembers, in 16 bytes a key or less, the keys this run sent: a row whose
key an earlier row of this run was sent for must be sent too, whatever the ledger or the state say
of it, or the earlier row's value would be the one that stays.
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


class SentKeys:
    """The keys this run has sent a row for: an exact-enough set of 64-bit key hashes.

    Open addressing in one array: Python's ``set`` would cost ~60 bytes a key, this costs 16 at
    most. Only sent keys are kept, so a nightly run that sends 1% of its rows keeps 1% of its keys.
    The low bit of a slot marks a key sent by more than one row.
    """

    def __init__(self) -> None:
        self._slots = array("q", bytes(8 * 1024))
        self._used = 0
        # The last key looked up, its hash and slot: the intake asks ``key in sent`` and then
        # adds that very key, and one probe of the table is enough for both.
        self._memo: tuple[str, int, int] | None = None
        #: keys sent by more than one row
        self.repeated = 0

    def __contains__(self, key: str) -> bool:
        h, i = self._find(key)
        self._memo = (key, h, i)
        return self._slots[i] != 0

    def add(self, key: str) -> None:
        """Note that a row of ``key`` is being sent."""
        memo = self._memo
        if memo is not None and memo[0] is key:
            _, h, i = memo
        else:
            h, i = self._find(key)
        self._memo = None  # the table changes: no slot found before holds
        slots = self._slots
        value = slots[i]
        if value:
            if not value & 1:
                slots[i] = value | 1
                self.repeated += 1
            return
        slots[i] = h
        self._used += 1
        if self._used * 4 > 3 * len(slots):
            self._grow()

    def _find(self, key: str) -> tuple[int, int]:
        """The key's hash, and its slot: where it is, or the empty one where it would go."""
        h = (hash(key) & ~1) or 2
        slots = self._slots
        mask = len(slots) - 1
        i = h & mask
        while (value := slots[i]) and value & ~1 != h:
            i = (i + 1) & mask
        return h, i

    def _grow(self) -> None:
        old = self._slots
        slots = self._slots = array("q", bytes(16 * len(old)))
        mask = len(slots) - 1
        for value in old:
            if value:
                i = (value & ~1) & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = value
