"""``bulkpatch run``: the command around the engine: progress, summary, and telling the owner.

The options are declared in ``run_options``; what the run leaves behind for its owner (metrics
file, webhook, the last stderr line) is ``telling``'s. This module runs the engine between them
and turns however it ended (a result, or an error that stopped it) into one exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Literal

import click
import orjson
from rich.console import Console

from bulkpatch.cli import stderr
from bulkpatch.cli.exits import exit_status
from bulkpatch.cli.run_options import RunArgs, options_of, run_options
from bulkpatch.cli.telling import Ending
from bulkpatch.cli.terminal import Stdout, print_safely, stderr_console
from bulkpatch.errors import BulkPatchError, ConfigError
from bulkpatch.event_loop import run_loop

if TYPE_CHECKING:
    from bulkpatch.cli.display import Progress
    from bulkpatch.engine.run import Run
    from bulkpatch.options import RunOptions
    from bulkpatch.records.results import RunResult


@click.command()
@run_options
def run(**given: Any) -> int:
    """Send one request per row of INPUT (.csv, .jsonl, .ndjson, gzipped too, or - for stdin).

    \b
    Authentication comes from the environment, never from flags:
      BULKPATCH_TOKEN                                  sent as "Authorization: Bearer ..."
      BULKPATCH_CLIENT_ID + BULKPATCH_CLIENT_SECRET    OAuth2 client credentials

    A row is skipped only when the last request applied (2xx) to its key at this target is this
    very request, with nothing recorded for the key since; the memory that knows it is --state,
    or bulkpatch-memory.db beside the ledger. Rows of one key are sent in input order.

    \b
    Settings: a flag beats its environment variable, which beats --config FILE (or
    BULKPATCH_CONFIG), which beats the default. Secrets come from the environment only.

    Exit status: 0 every row ok, skipped or unchanged; 1 some row failed or invalid, or the run
    stopped early because every row left would fail (API unreachable, the first rows all failed
    alike); 2 bad usage or configuration, or credentials rejected (nothing more sent); 130
    interrupted (the ledger is flushed; run again to resume).
    """
    args = RunArgs(**given)
    stderr.use_format(args.log_format, named=True)
    ending = Ending(args)
    try:
        code = _run(args, ending)
    except (BulkPatchError, KeyboardInterrupt) as exc:
        from bulkpatch.records.results import RunResult

        code = exit_status(exc)
        partial = exc.result if isinstance(exc, BulkPatchError) else None
        interrupted = isinstance(exc, KeyboardInterrupt)
        ending.finish(
            code,
            # What the run did: carried by the error that stopped it, or done before --verify failed.
            partial if isinstance(partial, RunResult) else ending.result,
            error="interrupted" if interrupted else str(exc),
            prefix="bulkpatch: " if interrupted else "bulkpatch: error: ",
            hints=ending.hints,
        )
        raise click.exceptions.Exit(code) from None
    ending.finish(code, ending.result, hints=ending.hints)
    return code


def _run(args: RunArgs, ending: Ending) -> int:
    """The run itself; its summary on stdout (in JSON log mode: in the end event instead)."""
    from bulkpatch.cli.display import Progress, print_summary
    from bulkpatch.cli.hints import next_steps
    from bulkpatch.engine.preview import dry_run as dry_run_rows
    from bulkpatch.engine.run import Run
    from bulkpatch.records.results import RunResult

    options = options_of(args)
    if args.verify_after:
        from bulkpatch.options import check_plannable

        check_plannable(options)
    if args.metrics_file is not None:
        from bulkpatch.records.metrics import check_writable

        check_writable(args.metrics_file)
    if args.notify_url is not None:
        from bulkpatch.http.notify import check_webhook

        check_webhook(args.notify_url)
    out = Stdout()
    if args.dry_run:
        found = dry_run_rows(options)
        _print_dry_run(out, found)
        return 1 if found.tally.bad else 0
    err = stderr_console()
    json_log = args.log_format == "json"
    # JSON lines are for a machine: never a live bar between them, whatever the terminal.
    live = not json_log and (err.is_terminal if args.progress is None else args.progress)
    command = (
        ["bulkpatch", "run", *sys.argv[2:]] if sys.argv[1:2] == ["run"] else ["bulkpatch", "run", args.input]
    )
    # Everything loaded so far lives as long as the process: keep it out of the cyclic GC's
    # sweeps, which otherwise rescan it all on every full collection (~2% of throughput).
    gc.freeze()

    def notice(line: str) -> None:
        if live:  # through the console, so that the line goes above the live bar
            err.print(f"bulkpatch: {line}", markup=False, highlight=False, soft_wrap=True)
        else:
            stderr.notice(line)

    def summary(result: RunResult, stopped: BaseException | None = None) -> None:
        ending.result = result
        ending.hints = next_steps(result, command, stopped)
        if not json_log:  # JSON: the end event carries the summary
            print_safely(lambda: print_summary(out, result, command=command, stopped=stopped))

    # --limit N --verify reads back this run's rows only (at most N of them, by row number).
    this_run: set[int] | None = set() if args.verify_after and options.limit else None
    on_result = (lambda r: this_run.add(r.row)) if this_run is not None else None
    with _event_log(args.log_json) as events:
        ending.run = engine = Run(options, events=events, notice=notice, on_result=on_result)
        if not args.quiet:
            ending.progress = Progress(
                engine.status, err, live=live, log_format=args.log_format, end_line=False
            )
        try:
            result = run_loop(
                run_with_progress(engine, err, live=live, quiet=args.quiet, progress=ending.progress)
            )
        except BulkPatchError as exc:
            # The run stopped early: show what it did, then why (one line), then exit.
            if isinstance(exc.result, RunResult):
                summary(exc.result, exc)
            raise
    summary(result)
    if args.verify_after and not result.interrupted:
        return max(result.exit_code, _verify(options, out, json_log, this_run))
    return result.exit_code


def _verify(options: RunOptions, out: Console, json_log: bool, rows: set[int] | None = None) -> int:
    """``--verify``: read the workloads back (``rows``, when given: only those); 1 when some
    live value differs from the input."""
    from bulkpatch.cli.operations import warn
    from bulkpatch.operations import read_back

    only = rows.__contains__ if rows is not None else None
    found = run_loop(read_back(options, notice=warn, only=only))
    line = (
        f"verified through GET: {found.matching:,} of {found.rows:,} rows match,"
        f" {found.drifted:,} differ, {found.not_found:,} not found"
    )
    if json_log:
        stderr.notice(line)
    else:
        print_safely(lambda: out.print(line, highlight=False))
    return found.exit_code


async def run_with_progress(
    run: Run,
    console: Console,
    *,
    live: bool,
    quiet: bool,
    log_format: Literal["text", "json"] = "text",
    progress: Progress | None = None,
) -> RunResult:
    """``run.execute()`` with ``progress`` (or a new display) watching it, unless ``quiet``."""
    from bulkpatch.cli.display import Progress

    watcher = None
    if not quiet:
        progress = progress or Progress(run.status, console, live=live, log_format=log_format)
        watcher = asyncio.create_task(progress.watch())
    try:
        return await run.execute(handle_signals=True)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


@contextlib.contextmanager
def _event_log(path: str | None) -> Any:
    if path is None:
        yield None
        return
    try:
        sink: IO[bytes] = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
    except OSError as exc:
        raise ConfigError(f"cannot open --log-json {path!r}: {exc.strerror}") from None

    def write(event: str, fields: dict[str, Any]) -> None:
        sink.write(orjson.dumps({"ts": round(time.time(), 3), "event": event, **fields}) + b"\n")
        sink.flush()

    try:
        yield write
    finally:
        sink.close()


def _print_dry_run(out: Console, found: Any) -> None:
    from bulkpatch.records.ledger import Status

    by = found.tally.by_status
    out.print(
        f"dry run: {found.tally.total:,} rows: {by[Status.OK]:,} would be sent, "
        f"{by[Status.INVALID]:,} invalid, {by[Status.SKIPPED]:,} skipped"
        + (f", {by[Status.UNCHANGED]:,} already equal live" if by[Status.UNCHANGED] else "")
        + "; nothing sent"
    )
    for method, url, body in found.samples:
        out.print(f"  {method} {url}", markup=False)
        if body is not None:
            out.print(f"    {body.decode()}", markup=False)
    for rejected in found.rejected:
        out.print(
            f"  row {rejected.row} (line {rejected.line}) {rejected.status}: {rejected.reason}", markup=False
        )
