"""``bulkpatch run``: its options, and the progress and summary around the engine."""

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

from bulkpatch.cli.environment import credentials
from bulkpatch.cli.terminal import Stdout, print_safely
from bulkpatch.defaults import DEFAULT_PATH
from bulkpatch.errors import BulkPatchError, ConfigError
from bulkpatch.event_loop import run_loop

if TYPE_CHECKING:
    from bulkpatch.engine.run import Run
    from bulkpatch.options import RunOptions
    from bulkpatch.records.results import RunResult


@click.command()
@click.argument("input", metavar="INPUT")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    help="Input format.  [default: from the extension]",
)
@click.option(
    "--base-url",
    envvar="BULKPATCH_BASE_URL",
    show_envvar=True,
    help="API root, e.g. https://eu2-cloud.acronis.com.",
)
@click.option(
    "--path",
    "path",
    default=DEFAULT_PATH,
    show_default=True,
    help="Path template; each {field} is filled from the row and left out of the body.",
)
@click.option("--method", default="PATCH", show_default=True, help="HTTP method.")
@click.option(
    "--schema",
    type=click.Choice(["workload", "any"]),
    default="workload",
    show_default=True,
    help="workload: validate the v5 PATCH body; any: any JSON object.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=16,
    show_default=True,
    help="Requests in flight at most.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes that send the requests.  Raise it (to the number of cores) only"
    " when a fast API makes bulkpatch itself use a whole CPU core.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests per second at most, all workers together.  [default: unlimited]",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    help="Attempts per row, the first one included.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds per attempt.",
)
@click.option(
    "-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Extra header; repeatable."
)
@click.option("--ledger", help="The run's ledger.  [default: INPUT.ledger.jsonl]")
@click.option(
    "--retry-failed",
    type=click.Choice(["transient", "all"]),
    is_flag=False,
    flag_value="transient",
    default=None,
    help="Also resend failed rows: transient failures (5xx, 429, timeouts, connection errors;"
    " the default) or, with --retry-failed=all, 4xx refusals too.",
)
@click.option(
    "--retry-unsafe",
    is_flag=True,
    help="Resend a POST after a timeout or dropped connection, although it may have been applied.",
)
@click.option(
    "--max-outage",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds the API may refuse every connection before the run stops (rows left unsent).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Handle at most N rows not done yet, then stop: a canary run. Run again to go on.",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    help="Sync state (SQLite): send only rows whose request differs from the one last applied"
    " to their key, and every key that failed before. For nightly syncs.",
)
@click.option("--full", is_flag=True, help="With --state: send every row, and refresh the state.")
@click.option(
    "--shard",
    metavar="K/N",
    help="Send only the rows whose key hashes to shard K of N (N alone: K from"
    " JOB_COMPLETION_INDEX, a Kubernetes Indexed Job). --rate is the whole job's: each shard takes"
    " R/N. Each shard has its own ledger and state.",
)
@click.option(
    "--only-changed",
    is_flag=True,
    help="Read the live workloads first (one GET per 100 rows) and send only the rows that change"
    " something; the others are recorded unchanged.",
)
@click.option(
    "--verify",
    "verify_after",
    is_flag=True,
    help="After the run, read the workloads back and exit 1 if any differs from the input.",
)
@click.option("--dry-run", is_flag=True, help="Validate and map every row, show a sample, send nothing.")
@click.option(
    "--token-url",
    envvar="BULKPATCH_TOKEN_URL",
    help="OAuth2 token endpoint.  [default: BASE_URL/api/2/idp/token]",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress on stderr.  [default: on when stderr is a terminal]",
)
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress and no periodic status lines; the summary only."
)
@click.option(
    "--log-json",
    type=click.Path(dir_okay=False, writable=True),
    help="Append one JSON line per retry, concurrency or rate change, outage start and end, token"
    " renewal and stop request.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Status lines when stderr is no terminal (cron, kubectl logs): text, or one JSON object each.",
)
def run(
    input: str,
    fmt: str | None,
    base_url: str | None,
    path: str,
    method: str,
    schema: str,
    concurrency: int,
    processes: int,
    rate: float | None,
    max_attempts: int,
    timeout: float,
    headers: tuple[str, ...],
    ledger: str | None,
    retry_failed: str | None,
    retry_unsafe: bool,
    max_outage: float,
    limit: int | None,
    state: str | None,
    full: bool,
    shard: str | None,
    only_changed: bool,
    verify_after: bool,
    dry_run: bool,
    token_url: str | None,
    progress: bool | None,
    quiet: bool,
    log_json: str | None,
    log_format: Literal["text", "json"],
) -> int:
    """Send one request per row of INPUT (.csv, .jsonl, .ndjson, gzipped too, or - for stdin).

    \b
    Authentication comes from the environment, never from flags:
      BULKPATCH_TOKEN                                  sent as "Authorization: Bearer ..."
      BULKPATCH_CLIENT_ID + BULKPATCH_CLIENT_SECRET    OAuth2 client credentials

    A row is skipped as done only when the ledger holds an answer to the very request it maps
    to now (same URL and body); rows of one key are sent in input order.

    Exit status: 0 every row ok, skipped or unchanged; 1 some row failed or invalid, or the run
    stopped early because every row left would fail (API unreachable, the first rows all failed
    alike); 2 bad usage or configuration, or credentials rejected (nothing more sent); 130
    interrupted (the ledger is flushed; run again to resume).
    """
    from bulkpatch.engine.preview import dry_run as dry_run_rows
    from bulkpatch.engine.run import Run
    from bulkpatch.options import RunOptions, parse_header, parse_shard
    from bulkpatch.records.results import RunResult
    from bulkpatch.records.resume import RetryFailed
    from bulkpatch.rows.schema import Schema

    options = RunOptions(
        input=input,
        base_url=base_url,
        format=fmt,
        path=path,
        method=method,
        schema=Schema(schema),
        concurrency=concurrency,
        processes=processes,
        rate=rate,
        max_attempts=max_attempts,
        timeout=timeout,
        headers=dict(parse_header(h) for h in headers),
        ledger=ledger,
        retry_failed=RetryFailed(retry_failed or RetryFailed.NONE),
        retry_unsafe=retry_unsafe,
        max_outage=max_outage,
        limit=limit,
        state=state,
        full=full,
        shard=parse_shard(shard, dict(os.environ)) if shard else None,
        only_changed=only_changed,
        dry_run=dry_run,
        token_url=token_url,
        **credentials(),
    )
    if verify_after:
        from bulkpatch.options import check_plannable

        check_plannable(options)
    out = Stdout()
    if dry_run:
        found = dry_run_rows(options)
        _print_dry_run(out, found)
        return 1 if found.tally.bad else 0
    err = Console(stderr=True, highlight=False)
    live = err.is_terminal if progress is None else progress
    command = ["bulkpatch", "run", *sys.argv[2:]] if sys.argv[1:2] == ["run"] else ["bulkpatch", "run", input]
    # Everything loaded so far lives as long as the process: keep it out of the cyclic GC's
    # sweeps, which otherwise rescan it all on every full collection (~2% of throughput).
    gc.freeze()

    def notice(line: str) -> None:
        err.print(f"bulkpatch: {line}", markup=False, highlight=False, soft_wrap=True)

    from bulkpatch.cli.display import print_summary

    with _event_log(log_json) as events:
        try:
            result = run_loop(
                run_with_progress(
                    Run(options, events=events, notice=notice),
                    err,
                    live=live,
                    quiet=quiet,
                    log_format=log_format,
                )
            )
        except BulkPatchError as exc:
            # The run stopped early: show what it did, then why (one line), then exit.
            partial = exc.result
            if isinstance(partial, RunResult):
                print_safely(lambda: print_summary(out, partial, command=command))
            raise
    print_safely(lambda: print_summary(out, result, command=command))
    if verify_after and not result.interrupted:
        return max(result.exit_code, _verify(options, out))
    return result.exit_code


def _verify(options: RunOptions, out: Console) -> int:
    """``--verify``: read the workloads back; 1 when some live value differs from the input."""
    from bulkpatch.cli.operations import warn
    from bulkpatch.operations import read_back

    found = run_loop(read_back(options, notice=warn))
    print_safely(
        lambda: out.print(
            f"verified through GET: {found.matching:,} of {found.rows:,} rows match,"
            f" {found.drifted:,} differ, {found.not_found:,} not found",
            highlight=False,
        )
    )
    return found.exit_code


async def run_with_progress(
    run: Run, console: Console, *, live: bool, quiet: bool, log_format: Literal["text", "json"] = "text"
) -> RunResult:
    from bulkpatch.cli.display import Progress

    watcher = None
    if not quiet:
        watcher = asyncio.create_task(Progress(run.status, console, live=live, log_format=log_format).watch())
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
        f"{by[Status.INVALID]:,} invalid, {by[Status.SKIPPED]:,} skipped; nothing sent"
    )
    for method, url, body in found.samples:
        out.print(f"  {method} {url}", markup=False)
        if body is not None:
            out.print(f"    {body.decode()}", markup=False)
    for rejected in found.rejected:
        out.print(
            f"  row {rejected.row} (line {rejected.line}) {rejected.status}: {rejected.reason}", markup=False
        )
