"""A CSV quote that never closes: found while the file streams, before the rows it swallowed go out.

``b,"unclosed`` on row 2 of 400,000 makes Python's csv module read every later line into that
one cell and hand it over at the end of the file: one 17 MB request, the real rows never sent,
no error. The lines go to ``csv.reader`` through ``QuoteWatch``, which stops the read with
``MalformedInput`` (exit 2) naming the line where the quote opened when

* the file ends with a quoted field still open (a marker line after the last one ends up inside
  the field instead of in a record of its own: csv's own parser decides, no guessing), or
* one record runs on across lines past ``MAX_SPAN`` characters (1 MiB): found as it is read, so
  a quote left open in a 10 GB file costs 1 MiB, not the file. A single line may be longer.

The record holding the open quote is never yielded, so none of it is sent; the rows before it
were read and are processed as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from bulkpatch.errors import MalformedInput

#: characters one record may span across lines; a longer multi-line record is taken for a quote
#: left open
MAX_SPAN = 1 << 20
#: the marker line handed to csv.reader after the last line of the file
END = "\ufdd0bulkpatch:end-of-file\ufdd0"


class QuoteWatch:
    """The lines of a CSV text, for ``csv.reader``. Before each record, set ``start`` to the lines
    read so far (``reader.line_num``); after it, ``at_end(values)`` tells the marker record."""

    def __init__(self, lines: Iterable[str], name: str, *, limit: int | None = None) -> None:
        self._lines = lines
        self._name = name
        self._limit = MAX_SPAN if limit is None else limit
        #: lines read before the record being read
        self.start = 0
        self._record = 0
        self._opened = 0

    def __iter__(self) -> Iterator[str]:
        # Locals, not attributes, on this path: it runs once per line of the file.
        limit = self._limit
        span = 0
        start = -1
        odd = False
        for line_no, line in enumerate(self._lines, start=1):
            if self.start != start:  # the first line of a record
                start, span, odd = self.start, 0, False
            # Where the quote opened: the last line after which the record's quotes are odd.
            if '"' in line and line.count('"') & 1:
                odd = not odd
                if odd:
                    self._opened = line_no
            span += len(line)
            if span > limit and line_no > start + 1:
                self._record = start
                raise MalformedInput(
                    f"{self._name}: line {self._where()}: a quoted field opened there runs on across lines"
                    f" past {limit:,} characters; a quote left open? Nothing from that line on was"
                    " sent (fix the quote; for values that long, use JSON Lines)"
                )
            yield line
        self._record = max(start, 0)
        yield END

    def at_end(self, values: list[str]) -> bool:
        """True for the marker record (the file is done); ``MalformedInput`` when the marker ended
        up inside a field, that is when the file ended inside a quoted field."""
        if not values or not values[-1].endswith(END):
            return False
        if len(values) == 1 and values[0] == END:
            return True
        raise MalformedInput(
            f"{self._name}: line {self._where()}: a quoted field opened there is never closed (it runs"
            " to the end of the file); nothing from that line on was sent"
        )

    def _where(self) -> int:
        return self._opened if self._opened > self._record else self._record + 1
