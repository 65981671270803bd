"""The ``bulkpatch`` command: parse, delegate, print. No logic of its own lives here.

Every expected failure ends as one line on stderr and an exit status (2 for usage and
configuration, before anything is sent); no traceback reaches the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import click
import orjson
from rich.console import Console

from bulkpatch import __version__
from bulkpatch.errors import AuthError, BulkPatchError, ConfigError, InputError
from bulkpatch.mapping import DEFAULT_PATH
from bulkpatch.options import RunOptions, parse_header, parse_shard
from bulkpatch.pipeline import Run
from bulkpatch.preview import dry_run as dry_run_rows
from bulkpatch.results import RunResult
from bulkpatch.resume import RetryFailed
from bulkpatch.schema import Schema

T = TypeVar("T")
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130


class _Group(click.Group):
    """A group whose usage errors are one line on stderr, exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(_EXIT_USAGE)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "bulkpatch"
            _fail(f"{command}: {exc.format_message()} (see --help)", _EXIT_USAGE)
        except click.ClickException as exc:
            _fail(f"bulkpatch: {exc.format_message()}", exc.exit_code)
        except click.exceptions.Abort:
            _fail("bulkpatch: interrupted", _EXIT_INTERRUPTED)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except (ConfigError, AuthError) as exc:
            _fail(f"bulkpatch: error: {exc}", _EXIT_USAGE)
        except InputError as exc:
            _fail(f"bulkpatch: error: {exc}", 1)
        except BulkPatchError as exc:
            _fail(f"bulkpatch: error: {exc}", 1)
        except KeyboardInterrupt:
            _fail("bulkpatch: interrupted", _EXIT_INTERRUPTED)
        except BrokenPipeError:
            # stdout went away (`bulkpatch report … | head -1`): what was asked is done.
            _quiet_stdout()
            sys.exit(rv if isinstance(rv, int) else 1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    with contextlib.suppress(OSError):
        click.echo(message, err=True)
    sys.exit(code)


def _ensure_std_streams() -> None:
    """Give a closed stdin, stdout or stderr (``<&-``, ``>&-``) /dev/null instead.

    Otherwise the next file opened takes the free descriptor 0, 1 or 2, and whatever writes to
    "stdout" then writes into it (uvloop aborts the process on it).
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            name = ("stdin", "stdout", "stderr")[fd]
            mode = "r" if fd == 0 else "w"
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 - lives as long as the process


class _Stdout(Console):
    """A console on stdout for which a reader that went away is not an error.

    rich's own answer to EPIPE is ``SystemExit(1)``; a run's exit status is its outcome instead.
    """

    def __init__(self) -> None:
        super().__init__(highlight=False, soft_wrap=True)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _quiet_stdout()


def _quiet_stdout() -> None:
    """After EPIPE on stdout: send the rest to /dev/null so that exiting does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (``bulkpatch[fast]``), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulkpatch")
def cli() -> None:
    """Apply one HTTP request per row of a CSV or JSONL file, resumably.

    Built for the Acronis Workload Management API v5 (PATCH workloads), usable with any REST
    API. Every row's outcome goes to a ledger; run the same command again to resume.

    \b
    Start here:   bulkpatch demo
    Then:         bulkpatch run workloads.csv --base-url https://eu2-cloud.acronis.com
    """


@cli.command()
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
    type=click.Choice([RetryFailed.TRANSIENT.value, RetryFailed.ALL.value]),
    is_flag=False,
    flag_value=RetryFailed.TRANSIENT.value,
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
    help="Append one JSON line per retry, pause, concurrency change or token renewal.",
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
        dry_run=dry_run,
        token=os.environ.get("BULKPATCH_TOKEN") or None,
        client_id=os.environ.get("BULKPATCH_CLIENT_ID") or None,
        client_secret=os.environ.get("BULKPATCH_CLIENT_SECRET") or None,
        token_url=token_url,
    )
    out = _Stdout()
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

    from bulkpatch.display import print_summary

    with _event_log(log_json) as events:
        try:
            result = run_async(
                _run_with_progress(
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
                _print_safely(lambda: print_summary(out, partial, command=command))
            raise
    _print_safely(lambda: print_summary(out, result, command=command))
    return result.exit_code


def _print_safely(show: Callable[[], None]) -> None:
    """Print to stdout; a reader that went away (``| head -1``) does not change the exit status."""
    try:
        show()
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()


async def _run_with_progress(
    run: Run, console: Console, *, live: bool, quiet: bool, log_format: Literal["text", "json"] = "text"
) -> RunResult:
    from bulkpatch.display import Progress

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
    from bulkpatch.ledger import Status

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


@cli.command()
@click.argument("ledgers", metavar="LEDGER...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--failed-out",
    type=click.Path(dir_okay=False),
    help="Write the failed and invalid input rows here, in the input's format.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False),
    help="The input to copy rows from.  [default: the one the ledger names]",
)
def report(ledgers: tuple[str, ...], as_json: bool, failed_out: str | None, input_path: str | None) -> int:
    """Summarise LEDGER...: the latest outcome of every row.

    Over several ledgers in order (a run, then the run of its fix file...), the latest outcome
    of each key wins. Exit status: 0 no row failed or invalid; 1 some are; 2 bad usage.
    """
    from bulkpatch.display import print_report
    from bulkpatch.report import exit_status, summarise, write_failed

    tally = summarise(*ledgers)
    written = write_failed(ledgers, failed_out, input_path=input_path) if failed_out else None
    if as_json:
        data = tally.as_dict()
        if written is not None:
            data["failed_out"] = {"path": failed_out, "rows": written}
        _print_safely(lambda: click.echo(orjson.dumps(data).decode()))
    else:
        _print_safely(lambda: print_report(_Stdout(), tally, ledgers))
        if written is not None:
            _print_safely(lambda: click.echo(f"wrote {written:,} rows to {failed_out}"))
    return exit_status(tally)


@cli.command("state")
@click.argument("state_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--failing", type=click.IntRange(0), default=20, show_default=True, help="Failing keys to list."
)
def state_command(state_file: str, as_json: bool, failing: int) -> int:
    """Show a sync state database: recent runs, keys applied, keys failing now.

    Exit status: 0 no key failing; 1 some keys failing (the next run sends them again).
    """
    from bulkpatch.sync_state import describe

    found = describe(state_file, failing_shown=failing)
    if as_json:
        _print_safely(lambda: click.echo(orjson.dumps(found).decode()))
    else:
        _print_safely(lambda: _print_state(_Stdout(), state_file, found))
    return 1 if any(found["failing_counts"].values()) else 0


def _print_state(out: Console, path: str, found: dict[str, Any]) -> None:
    out.print(f"[bold]sync state[/] {path}", highlight=False)
    for target, applied in sorted(found["applied"].items()):
        out.print(
            f"  {target}: {applied:,} keys applied, {found['failing_counts'].get(target, 0):,} failing",
            markup=False,
        )
    if found["runs"]:
        out.print("recent runs:")
        for r in found["runs"]:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["started"]))
            counts = "  ".join(
                f"{k} {r[k]:,}" for k in ("sent", "ok", "failed", "invalid", "unchanged") if r[k]
            )
            outcome = r["outcome"] or "did not end (still running, or killed)"
            out.print(f"  #{r['id']}  {started} UTC  {outcome}  {counts}  {r['input']}", markup=False)
    if found["failing"]:
        out.print("failing keys (sent again by the next run):")
        for f in found["failing"]:
            code = f" HTTP {f['http_status']}" if f["http_status"] else ""
            out.print(f"  {f['key']}  {f['status']}{code}  {f['error'] or ''}", markup=False)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port."
)
@click.option(
    "--workloads", type=click.IntRange(0), default=200, show_default=True, help="Workloads to seed."
)
@click.option(
    "--seed-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Seed the store from this JSONL file of workloads instead.",
)
@click.option(
    "--persist", type=click.Path(dir_okay=False), help="Save the store to this JSONL file on shutdown."
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="Makes the data and the faults repeatable."
)
@click.option("--client-id", default="bulkpatch-demo", show_default=True)
@click.option(
    "--client-secret", envvar="BULKPATCH_MOCK_CLIENT_SECRET", default="demo-secret", show_default=True
)
@click.option(
    "--static-token", "static_tokens", multiple=True, help="A bearer token accepted as is; repeatable."
)
@click.option(
    "--auth/--no-auth", "require_auth", default=True, help="--no-auth accepts API calls without a token."
)
@click.option(
    "--token-lifetime", type=click.FloatRange(min=0.1), default=7200.0, show_default=True, help="Seconds."
)
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option(
    "--jitter-ms",
    "latency_jitter_ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Random extra latency up to this.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of API calls answered 503.",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of API calls whose connection is dropped.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="API calls per second; above it, 429 + Retry-After.",
)
@click.option(
    "--retry-after", type=click.IntRange(0), default=1, show_default=True, help="Seconds, sent with each 429."
)
def mock(**kw: Any) -> int:
    """Serve a local stand-in for the Workload Management API v5.

    Token endpoints, workloads list/get/create/update/delete with the real API's shapes, status
    codes and error envelope, and fault injection. Counters: GET /__mock__/stats.
    """
    from bulkpatch.mock import MockConfig, MockServer

    host, port = kw.pop("host"), kw.pop("port")
    config = MockConfig(**kw)

    async def serve() -> None:
        server = MockServer(config, host=host, port=port)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None

        def banner() -> None:
            workloads = len(server.api.store)
            click.echo(f"mock Workload Management API v5 on {server.url} ({workloads:,} workloads)")
            click.echo(f"  export BULKPATCH_BASE_URL={server.url}")
            click.echo(f"  export BULKPATCH_CLIENT_ID={config.client_id}")
            click.echo("  export BULKPATCH_CLIENT_SECRET=...   (the --client-secret you chose)")
            click.echo("Ctrl-C or SIGTERM stops it (and saves the store with --persist).")

        try:
            # SIGTERM too, not only Ctrl-C, closes the server and so saves a --persist store; the
            # banner comes once the handlers are in place, so a signal sent after it is caught.
            await server.serve_until_stopped(ready=banner)
        finally:
            await server.close()

    with contextlib.suppress(KeyboardInterrupt):
        run_async(serve())
    return 0


@cli.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Keep the demo's input and ledger here.  [default: a temporary folder]",
)
@click.option(
    "--progress/--no-progress", default=None, help="Live progress.  [default: on when stderr is a terminal]"
)
def demo(workdir: str | None, progress: bool | None) -> int:
    """Run a sample migration against the embedded mock API: no network, no account needed."""
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return _demo(Path(workdir), progress)
    with tempfile.TemporaryDirectory(prefix="bulkpatch-demo-") as tmp:
        return _demo(Path(tmp), progress)


def _demo(folder: Path, progress: bool | None) -> int:
    from bulkpatch.demo import DEMO_ROWS, run_demo, write_input
    from bulkpatch.display import print_summary
    from bulkpatch.mock import MockConfig

    out = _Stdout()
    err = Console(stderr=True, highlight=False)
    live = err.is_terminal if progress is None else progress

    def announce(url: str, config: MockConfig, source: Path) -> None:
        out.print(f"[bold]bulkpatch demo[/]: mock Workload Management API v5 on {url}")
        out.print(
            f"  {DEMO_ROWS} workloads; faults on: {config.error_rate:.0%} 503s, "
            f"{config.drop_rate:.0%} dropped connections, 429 above {config.rate_limit:.0f} req/s, "
            f"{config.latency_ms:.0f}-{config.latency_ms + config.latency_jitter_ms:.0f} ms latency"
        )
        out.print(f"  input: {source}  (rename, move to site fra2, set owner, disable some)")

    async def execute(run: Run) -> RunResult:
        return await _run_with_progress(run, err, live=live, quiet=False)

    outcome = run_async(run_demo(write_input(folder), execute, announce))
    print_summary(out, outcome.result, command=["bulkpatch", "run", str(outcome.source)])
    if outcome.problems:
        for problem in outcome.problems[:10]:
            err.print(f"verify: {problem}", markup=False)
        _fail(f"bulkpatch demo: {len(outcome.problems)} workloads do not carry the new values", 1)
    out.print(f"verified through GET: all {outcome.checked} workloads carry the new values")
    out.print("\n[bold]Against a real data center[/]:")
    for line in (
        "export BULKPATCH_CLIENT_ID=...  BULKPATCH_CLIENT_SECRET=...",
        "bulkpatch run workloads.csv --base-url https://eu2-cloud.acronis.com --dry-run",
        "bulkpatch run workloads.csv --base-url https://eu2-cloud.acronis.com",
        "bulkpatch report workloads.csv.ledger.jsonl",
    ):
        out.print(f"  {line}", markup=False)
    return outcome.result.exit_code


def main() -> None:
    """Console-script entry point."""
    _ensure_std_streams()
    cli.main(prog_name="bulkpatch")
