"""``bulkpatch report``: summarise ledgers, and write out the rows that still need attention.

Which record of a row counts, over one ledger or a chain of fix-up runs, is ``chain.py``'s
business. Here: the tally, the exit status, and the file of rows to fix, each row followed by
why it needs fixing, in a form that ``bulkpatch run`` takes back as it is.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import os
from collections.abc import Callable, Iterator, Sequence
from typing import IO, cast

import orjson

from bulkpatch.errors import ConfigError
from bulkpatch.records.chain import LedgerPath, distinct, latest, parse_row, source_of
from bulkpatch.records.guard import refuse_to_replace, same_file
from bulkpatch.records.ledger import RowResult, Status
from bulkpatch.records.stats import Tally
from bulkpatch.rows.columns import ANNOTATION_COLUMNS, ANNOTATION_KEY
from bulkpatch.rows.reader import InputFile, csv_line, is_stream

__all__ = ["exit_status", "parse_row", "render", "summarise", "write_failed"]


def summarise(*ledgers: LedgerPath) -> Tally:
    """Tally the outcome that counts for every row of ``ledgers`` (see the module's docstring)."""
    tally = Tally()
    for _, result in latest(ledgers):
        tally.add(result)
    return tally


def exit_status(tally: Tally) -> int:
    """``bulkpatch report``'s exit status: 1 while some row is still failed or invalid, else 0."""
    return 1 if tally.bad else 0


def write_failed(
    ledgers: LedgerPath | Sequence[LedgerPath], out: str, *, input_path: str | None = None
) -> int:
    """Write the input rows whose outcome is failed or invalid to ``out``; return how many.

    The rows are copied from the input each ledger names, in its own format (CSV with its header),
    followed by why each still needs attention: CSV columns ``_status,_http_status,_error,_row``,
    or a ``_bulkpatch`` object in each JSONL record. ``bulkpatch run`` ignores both, so the file
    can be fixed and fed back as it is. ``out`` is created private (0600) and is never a file of
    its own chain: one of the ledgers, the input one names, or an input that has a ledger.
    """
    if is_stream(out):
        # The report itself goes to stdout, and a file of rows is made private (0600): a terminal
        # or a pipe given here would get rows in the middle of the report, or its mode changed.
        raise ConfigError(f"--failed-out needs a file name, not {out!r} (stdout, a pipe or a device)")
    chain = distinct([ledgers] if isinstance(ledgers, str | os.PathLike) else list(ledgers))
    if input_path is not None and len(chain) > 1:
        raise ConfigError("--input goes with one LEDGER; each ledger names its own input")
    wanted: list[dict[int, RowResult]] = [{} for _ in chain]
    messages: dict[str, str] = {}
    for position, result in latest(chain):
        if result.status in (Status.FAILED, Status.INVALID):
            # One copy of each message: a million rows failing alike share one string.
            if result.error is not None and len(messages) < 10_000:
                result.error = messages.setdefault(result.error, result.error)
            wanted[position][result.row] = result
    sources = [source_of(ledger, input_path) for ledger in chain]
    _refuse_own_chain(out, [*map(str, chain), *(name for name, _ in sources)])
    # The inputs with rows to copy; the last one alone when none has (for the CSV header).
    last = len(chain) - 1
    jobs = [(at, sources[at], rows) for at, rows in enumerate(wanted) if rows] or [(last, sources[last], {})]
    written = 0
    with contextlib.ExitStack() as stack:
        inputs = [stack.enter_context(InputFile(name, fmt, keep_raw=True)) for _, (name, fmt), _ in jobs]
        header = _common_header(inputs)
        sink = stack.enter_context(_open_private(out))
        if header is not None:
            sink.write(csv_line([*header, *ANNOTATION_COLUMNS]) + "\n")
        for source, (at, _, rows) in zip(inputs, jobs, strict=True):
            # _row ties a fixed row to the ledger just before its own in a chain (chain.py):
            # only rows of the last ledger given can be tied that way.
            tie = at == last
            if source.header is not None:
                annotate = _csv_annotator(source.header, tie)
            else:
                annotate = functools.partial(_jsonl_annotated, tie=tie)
            for record in source:
                outcome = rows.get(record.row)
                if outcome is not None and record.raw is not None:
                    sink.write(annotate(record.raw, outcome) + "\n")
                    written += 1
    return written


def render(
    ledgers: Sequence[LedgerPath], *, html_out: str | None = None, markdown_out: str | None = None
) -> tuple[Tally, list[tuple[str, str]], str | None]:
    """Write the ``--html`` and ``--markdown FILE`` reports of ``ledgers``; return the tally,
    ``(kind, path)`` of each file written, and the Markdown to print for ``markdown_out="-"``."""
    from bulkpatch.records.report_html import render_html
    from bulkpatch.records.report_markdown import render_markdown
    from bulkpatch.records.run_view import collect

    view = collect(list(ledgers))
    chain = [*ledgers, *(info.input for info in view.ledgers if info.input)]
    written: list[tuple[str, str]] = []
    if html_out:
        _write_rendered(html_out, render_html(view), chain, "--html")
        written.append(("html", html_out))
    markdown = render_markdown(view) if markdown_out else None
    if markdown is not None and markdown_out != "-":
        _write_rendered(str(markdown_out), markdown, chain, "--markdown")
        written.append(("markdown", str(markdown_out)))
        markdown = None
    return view.tally, written, markdown


def _write_rendered(out: str, text: str, chain: Sequence[LedgerPath], option: str) -> None:
    """Write a rendered report (``--html``, ``--markdown``) to ``out``, private (0600), never over
    a file of its chain: ``report --markdown a.ledger.jsonl b.ledger.jsonl`` would otherwise take
    the first ledger for the file to write. ``chain``: the ledgers and the inputs they name."""
    _refuse_own_chain(out, [os.fspath(path) for path in chain], option)
    if _is_ledger(out):
        raise ConfigError(f"{option} {out!r} is a ledger; pick another name")
    with _open_private(out) as sink:
        sink.write(text)


def _is_ledger(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return False
    try:
        data = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("type") == "header"


def _refuse_own_chain(out: str, chain: list[str], option: str = "--failed-out") -> None:
    for path in chain:
        if same_file(out, path):
            raise ConfigError(
                f"{option} {out!r} is a file of this report's own chain ({path}); pick another name"
            )
    refuse_to_replace(option, out, ())  # another chain's ledger, a sync state
    if os.path.exists(out + ".ledger.jsonl"):
        raise ConfigError(
            f"{option} {out!r} is the input of the ledger {out + '.ledger.jsonl'!r}; pick another name"
        )


def _common_header(inputs: list[InputFile]) -> list[str] | None:
    """The CSV header to write (without annotation columns), or None for JSONL."""
    formats = {source.format for source in inputs}
    if len(formats) > 1:
        raise ConfigError("the ledgers' inputs are CSV and JSONL: write --failed-out from one at a time")
    headers = [_plain(source.header) for source in inputs if source.header is not None]
    if any(header != headers[0] for header in headers[1:]):
        raise ConfigError(
            "the ledgers' inputs have different CSV columns: write --failed-out from one at a time"
        )
    return headers[0] if headers else None


def _plain(header: list[str]) -> list[str]:
    return [name for name in header if name not in ANNOTATION_COLUMNS]


def _csv_annotator(header: list[str], tie: bool) -> Callable[[str, RowResult], str]:
    keep = [at for at, name in enumerate(header) if name not in ANNOTATION_COLUMNS]
    width = len(header)

    def annotated(raw: str, result: RowResult) -> str:
        values = next(csv.reader(io.StringIO(raw, newline="")), [])
        if len(values) == width:  # an earlier run's annotations make way for this one's
            values = [values[at] for at in keep]
        http = "" if result.http_status is None else str(result.http_status)
        row = str(result.row) if tie else ""
        return csv_line([*values, result.status.value, http, result.error or "", row])

    return annotated


def _jsonl_annotated(raw: str, result: RowResult, *, tie: bool) -> str:
    note = {
        "status": result.status.value,
        "http_status": result.http_status,
        "error": result.error,
        "row": result.row if tie else None,
    }
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        # Not a JSON object, so it cannot carry the note: the note carries it, to be fixed, and its
        # row ties the fix to this row as for any other (copied bare, a chained report counted
        # the row twice: once here, once in the fix file's ledger).
        text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return orjson.dumps({ANNOTATION_KEY: {**note, "raw": text}}).decode()
    if ANNOTATION_KEY in record:
        record[ANNOTATION_KEY] = note
        return orjson.dumps(record).decode()
    # Spliced into the text as written, so that the row's own numbers keep their spelling.
    text = raw.rstrip()
    inside = text[:-1].rstrip()
    comma = "" if inside.endswith("{") else ","
    return f'{inside}{comma}"{ANNOTATION_KEY}":{orjson.dumps(note).decode()}}}'


@contextlib.contextmanager
def _open_private(out: str) -> Iterator[IO[str]]:
    """``out``, truncated, readable by its owner only: its rows may hold personal data."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {out!r}: {exc.strerror}") from None
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "wb") as raw:
        binary = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="wb")) if out.endswith(".gz") else raw
        with io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="") as text:
            yield text
