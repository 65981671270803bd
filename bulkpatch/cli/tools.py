"""The commands around a run: ``report``, ``mock`` and ``demo`` (``state`` is in ``state.py``)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import click
import orjson

from bulkpatch.cli.terminal import Stdout, fail, print_safely, stderr_console
from bulkpatch.errors import ConfigError
from bulkpatch.event_loop import run_loop


@click.command()
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
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False),
    help="Write a self-contained HTML page (counts, charts, errors) here.",
)
@click.option(
    "--markdown",
    "markdown_out",
    type=click.Path(dir_okay=False, allow_dash=True),
    is_flag=False,
    flag_value="-",
    metavar="[FILE]",
    help="Print a Markdown summary for a ticket instead of the table, or write it to FILE.",
)
def report(
    ledgers: tuple[str, ...],
    as_json: bool,
    failed_out: str | None,
    input_path: str | None,
    html_out: str | None,
    markdown_out: str | None,
) -> int:
    """Summarise LEDGER...: the latest outcome of every row.

    Over several ledgers in order (a run, then the run of its fix file...), the latest outcome
    of each key wins. Exit status: 0 no row failed or invalid; 1 some are; 2 bad usage.
    """
    from bulkpatch.cli.display import print_report
    from bulkpatch.records.report import exit_status, render, summarise, write_failed

    if as_json and markdown_out == "-":
        raise ConfigError("--json and --markdown both print: give --markdown a FILE")
    written_to: list[tuple[str, str]] = []
    markdown = None
    if html_out or markdown_out:
        tally, written_to, markdown = render(ledgers, html_out=html_out, markdown_out=markdown_out)
    else:
        tally = summarise(*ledgers)
    written = write_failed(ledgers, failed_out, input_path=input_path) if failed_out else None
    if as_json:
        data = tally.as_dict()
        if written is not None:
            data["failed_out"] = {"path": failed_out, "rows": written}
        data.update((kind, path) for kind, path in written_to)
        print_safely(lambda: click.echo(orjson.dumps(data).decode()))
    else:
        if markdown is not None:
            print_safely(lambda: click.echo(markdown, nl=False))
        else:
            print_safely(lambda: print_report(Stdout(), tally, ledgers))
        # Markdown on stdout goes into a ticket as it is: the notes go to stderr then.
        rows = "row" if written == 1 else "rows"
        notes = [f"wrote {written:,} {rows} to {failed_out}"] if written is not None else []
        notes += [f"wrote the {kind} report to {path}" for kind, path in written_to]
        if notes:
            print_safely(lambda: click.echo("\n".join(notes), err=markdown is not None))
    return exit_status(tally)


@click.command()
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
@click.option(
    "--announce-rate-limit",
    type=click.Choice(["ietf", "legacy", "x"]),
    help="Announce --rate-limit in every answer: RateLimit (IETF draft), RateLimit-*, or X-RateLimit-*.",
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
        run_loop(serve())
    return 0


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Keep the demo's input and ledger here.  [default: a temporary folder]",
)
@click.option(
    "--progress/--no-progress", default=None, help="Live progress.  [default: on when stderr is a terminal]"
)
def demo(workdir: str | None, progress: bool | None) -> int:
    """Run a sample migration against the embedded mock API: no network, no account needed.

    The demo's input and ledger are kept (in a new temporary folder unless --workdir), so the
    commands it prints afterwards work.
    """
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return _demo(Path(workdir), progress)
    return _demo(Path(tempfile.mkdtemp(prefix="bulkpatch-demo-")), progress)


def _demo(folder: Path, progress: bool | None) -> int:
    from bulkpatch.cli.demo import DEMO_ROWS, run_demo, write_input
    from bulkpatch.cli.display import print_summary
    from bulkpatch.cli.run import run_with_progress
    from bulkpatch.engine.run import Run
    from bulkpatch.mock import MockConfig
    from bulkpatch.records.results import RunResult

    out = Stdout()
    err = stderr_console()
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
        return await run_with_progress(run, err, live=live, quiet=False)

    outcome = run_loop(run_demo(write_input(folder), execute, announce))
    print_summary(out, outcome.result, command=["bulkpatch", "run", str(outcome.source)])
    if outcome.problems:
        for problem in outcome.problems[:10]:
            err.print(f"verify: {problem}", markup=False)
        fail(f"bulkpatch demo: {len(outcome.problems)} workloads do not carry the new values", 1)
    out.print(f"verified through GET: all {outcome.checked} workloads carry the new values")
    out.print(f"the demo's input and ledger are kept in {folder}", markup=False, highlight=False)
    out.print("\n[bold]Against a real data center[/]:")
    for line in (
        "export BULKPATCH_CLIENT_ID=...  BULKPATCH_CLIENT_SECRET=...",
        "bulkpatch run workloads.csv --base-url https://eu2-cloud.acronis.com --dry-run",
        "bulkpatch run workloads.csv --base-url https://eu2-cloud.acronis.com",
        "bulkpatch report workloads.csv.ledger.jsonl",
    ):
        out.print(f"  {line}", markup=False)
    return outcome.result.exit_code
