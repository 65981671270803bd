"""A listing that follows cursors must end: a cursor that comes back, or a page of ids already
listed, means the API's paging does not advance.

Against a server whose answers always carry the same ``paging.cursors.after``, ``export`` paged
forever. ``PagingWatch`` sees each page of one listing and names the problem instead: the read
then ends with an error, never a loop. Memory stays bounded: every cursor is kept (one per page),
ids only for the last ``WINDOW`` of them, which catches a page repeated within that span (a
cycle longer than that repeats a cursor, or is a listing without end that no client can tell
from a long one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

#: ids remembered, the most recent ones
WINDOW = 100_000
#: pages in a row with no item but a next cursor, before the listing is taken for stuck
EMPTY_PAGES = 10
_SHOWN = 40


class PagingWatch:
    """``problem(items, after)`` for each page, in order: None while the listing advances."""

    def __init__(self) -> None:
        self.pages = 0
        self._cursors: set[str] = set()
        self._ids: set[str] = set()
        self._order: deque[list[str]] = deque()
        self._empty = 0

    def problem(self, items: Sequence[dict[str, Any]], after: str | None) -> str | None:
        """Why the listing must stop after this page, or None."""
        self.pages += 1
        ids = [str(item.get("id")) for item in items]
        if ids and all(i in self._ids for i in ids):
            return (
                f"page {self.pages} of the listing repeats workloads already listed ({_clip(ids[0])}…):"
                " the API's paging does not advance"
            )
        self._remember(ids)
        self._empty = 0 if ids else self._empty + 1
        if after is None:
            return None
        if after in self._cursors:
            return f"the API answered the paging cursor {_clip(after)!r} twice: its paging does not advance"
        self._cursors.add(after)
        if self._empty >= EMPTY_PAGES:
            return f"the API answered {self._empty} empty pages in a row, each with a next cursor"
        return None

    def _remember(self, ids: list[str]) -> None:
        self._order.append(ids)
        self._ids.update(ids)
        held = sum(len(page) for page in self._order)
        while len(self._order) > 1 and held > WINDOW:
            oldest = self._order.popleft()
            held -= len(oldest)
            self._ids.difference_update(oldest)


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"
