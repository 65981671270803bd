"""The files ``export`` and ``plan`` write: whole or not at all, private, and never over a file
that bulkpatch must not change.

A file is written to a temporary name beside it (created, never reused: a user's ``FILE.part``
is left alone) and renamed over the target once complete, so that a failed export leaves the old
file as it was. ``plan --snapshot`` may be given the input itself, or its ledger, by a slip of
the keyboard (``--overwrite-snapshot`` once replaced a 2,000-row input with a 45-row rollback):
``records/guard.py`` says which targets are refused.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import IO, cast

from bulkpatch.errors import ConfigError
from bulkpatch.records.guard import refuse_to_replace


class Output:
    """A file written whole or not at all: a temporary file renamed on success; ``-`` is stdout.

    Private to its owner (0600), as the ledger is: it holds the tenant's data. A name ending in
    ``.gz`` is gzipped (``run`` reads it as it is). ``option`` names the flag in errors.
    """

    def __init__(
        self, path: str, *, option: str = "--output", protect: Sequence[str] = (), run_inputs: bool = True
    ) -> None:
        self.path = path
        if path != "-":
            refuse_to_replace(option, path, protect, run_inputs=run_inputs)
        self._part: str | None = None
        self._target = path
        self._raw: IO[bytes] | None = None
        self.stream: IO[bytes]

    def __enter__(self) -> IO[bytes]:
        if self.path == "-":
            self.stream = sys.stdout.buffer
            return self.stream
        # Through a symbolic link: the file it names is replaced, the link stays.
        self._target = os.path.realpath(self.path)
        folder, name = os.path.split(self._target)
        try:
            fd, self._part = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path!r}: {exc.strerror}") from None
        self._raw = os.fdopen(fd, "wb")  # mkstemp creates it 0600
        if self.path.endswith(".gz"):
            self.stream = cast(IO[bytes], gzip.GzipFile(fileobj=self._raw, mode="wb"))
        else:
            self.stream = self._raw
        return self.stream

    def __exit__(self, kind: object, *exc: object) -> None:
        if self._raw is None or self._part is None:
            self.stream.flush()
            return
        if self.stream is not self._raw:
            self.stream.close()
        self._raw.close()
        if kind is None:
            os.replace(self._part, self._target)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self._part)
