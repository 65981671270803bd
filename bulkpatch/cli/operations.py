"""The commands around a run: ``export``, ``plan`` and ``verify``. Parse, delegate, print.

They are thin click shells over ``bulkpatch.operations`` (the library's ``plan``, ``verify``,
``export``), registered on the ``bulkpatch`` group by ``main.py``; its group turns
``ConfigError`` into one line on stderr and exit 2. Credentials come from the environment, as for
``run``. Data goes to stdout or the output file; progress and warnings go to stderr.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
import orjson

from bulkpatch.cli.environment import credentials
from bulkpatch.cli.terminal import print_safely
from bulkpatch.event_loop import run_loop

if TYPE_CHECKING:  # the engine is imported when a command runs, not for --help
    from bulkpatch.ops.plan import PlanResult
    from bulkpatch.ops.verify import VerifyResult

_CLIP = 60


def _api_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that reads the API takes."""
    for option in reversed(
        [
            click.option("--base-url", envvar="BULKPATCH_BASE_URL", show_envvar=True, help="API root."),
            click.option("-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'"),
            click.option("--token-url", envvar="BULKPATCH_TOKEN_URL", help="OAuth2 token endpoint."),
            click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0),
            click.option("--max-attempts", type=click.IntRange(1, 100), default=5),
            click.option("-q", "--quiet", is_flag=True, help="No progress lines."),
        ]
    ):
        func = option(func)
    return func


class _Ticker:
    """Progress on stderr: a line rewritten in place on a terminal, a line every 5 s elsewhere."""

    def __init__(self, what: str, quiet: bool) -> None:
        self._what, self._quiet = what, quiet
        self._tty = sys.stderr.isatty()
        self._started = self._last = time.monotonic()
        self._every = 0.25 if self._tty else 5.0

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        if self._quiet or now - self._last < self._every:
            return
        self._last = now
        rate = count / max(now - self._started, 1e-9)
        line = f"{self._what}: {count:,} rows ({rate:,.0f}/s)"
        click.echo(f"\r{line}" if self._tty else line, err=True, nl=not self._tty)

    def done(self) -> None:
        if self._tty and not self._quiet and self._last != self._started:
            click.echo("", err=True)


def warn(line: str) -> None:
    click.echo(f"bulkpatch: warning: {line}", err=True)


def _connection(kw: dict[str, Any]) -> dict[str, Any]:
    """The library's connection keywords from the shared flags and the environment."""
    from bulkpatch.option_values import parse_header

    return {
        "base_url": kw["base_url"],
        "headers": dict(parse_header(h) for h in kw["headers"]),
        "token_url": kw["token_url"],
        "timeout": kw["timeout"],
        "max_attempts": kw["max_attempts"],
        **credentials(),
    }


@click.command()
@_api_options
@click.option(
    "-o", "--output", required=True, help="The file to write (.csv, .jsonl, .gz too); - for stdout."
)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="[default: from --output]")
@click.option("--columns", help="Fields after workload_id, e.g. name,attributes.site.  [default: see below]")
@click.option("--type", "types", multiple=True, help="Workload type (CTI id); repeatable, up to 10.")
@click.option("--tenant-id", help="Only this tenant's workloads.")
@click.option("--workload-id", "workload_ids", multiple=True, help="Only these ids; repeatable, up to 100.")
@click.option("--updated-since", help="Only workloads updated at or after this RFC 3339 time.")
@click.option("--page-size", type=click.IntRange(1, 1000), default=100, show_default=True)
def export(output: str, fmt: str | None, columns: str | None, page_size: int, **kw: Any) -> int:
    """List workloads into a file that `bulkpatch run` reads: edit it, then run it.

    \b
    CSV columns: workload_id, then --columns, or name, enabled, allowed_actions and every
    attribute key of the first page (keys first seen later are left out, with a warning).
    A value no CSV cell carries back exactly (an attribute that is a number) is left empty,
    so that the unedited file changes nothing; JSONL (or --columns attributes) keeps them all.
    """
    from bulkpatch.operations import export_async

    ticker = _Ticker("export", kw["quiet"])
    result = run_loop(
        export_async(
            output,
            format=fmt,
            columns=columns,
            types=kw["types"],
            tenant_id=kw["tenant_id"],
            workload_ids=kw["workload_ids"],
            updated_since=kw["updated_since"],
            page_size=page_size,
            notice=warn,
            on_progress=ticker,
            **_connection(kw),
        )
    )
    ticker.done()
    if result.lost.total():
        warn(
            f"{result.lost.total():,} values left empty (no CSV cell carries them back exactly):"
            f" {result.lost.describe()}; use --format jsonl or --columns attributes"
        )
    if result.unseen_keys.total():
        warn(
            f"attribute keys first seen after the first page are not in the CSV:"
            f" {result.unseen_keys.describe()}; name them in --columns or use --format jsonl"
        )
    where = "stdout" if output == "-" else output
    click.echo(f"exported {result.written:,} workloads to {where} ({result.requests:,} requests)", err=True)
    return 0


@click.command()
@click.argument("input", metavar="INPUT")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="[default: from the extension]")
@click.option("--snapshot", help="Where the rollback goes.  [default: INPUT's name + .before.csv/.jsonl]")
@click.option("--overwrite-snapshot", is_flag=True, help="Replace an existing snapshot file.")
@_api_options
def plan(input: str, fmt: str | None, snapshot: str | None, overwrite_snapshot: bool, **kw: Any) -> int:
    """Show what `bulkpatch run INPUT` would change, and write the rollback snapshot.

    Reads the live workloads of INPUT's rows (one GET per 100 rows) and compares each field
    a row sets (attributes key by key). The snapshot holds the before-values of the fields
    that would change, in INPUT's format: `bulkpatch run SNAPSHOT` undoes the change. An
    existing snapshot is never replaced unless --overwrite-snapshot: keep the one made before
    the run.
    """
    from bulkpatch.operations import plan_async
    from bulkpatch.ops.plan import default_snapshot

    if snapshot is None and input == "-":
        warn("no snapshot for stdin unless --snapshot FILE is given")
    ticker = _Ticker("plan", kw["quiet"])
    connection = _connection(kw)
    result = run_loop(
        plan_async(
            input,
            format=fmt,
            snapshot=snapshot or default_snapshot(input),
            overwrite_snapshot=overwrite_snapshot,
            notice=warn,
            on_progress=ticker,
            **connection,
        )
    )
    ticker.done()
    # `plan … | head -1`: a reader that goes away changes neither the plan nor its exit status.
    print_safely(lambda: _print_plan(result, input, connection["base_url"]))
    return 0


def _gets(n: int) -> str:
    return f"{n:,} GET{'' if n == 1 else 's'}"


def _show(value: Any) -> str:
    from bulkpatch.ops.compare import MISSING

    text = "(absent)" if value is MISSING else orjson.dumps(value).decode()
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def _print_plan(result: PlanResult, input: str, base_url: str | None) -> None:
    echo = click.echo
    echo(f"plan: {result.rows:,} rows of {input} against {base_url} ({_gets(result.requests)})")
    echo(f"  ~ {result.to_change:,} to change")
    for name, count in result.fields.most_common(20):
        echo(f"      {name:<32} {count:,} rows")
    echo(f"  = {result.unchanged:,} unchanged")
    if result.not_found:
        echo(
            f"  ! {result.not_found:,} not found: {', '.join(result.missing)}{' …' * (result.not_found > 10)}"
        )
    if result.repeated:
        echo(f"  + {result.repeated:,} repeat an earlier row's id (always sent: they depend on earlier rows)")
    if result.not_planned:
        echo(f"  - {result.not_planned:,} invalid or empty (run records them; see run --dry-run)")
    if result.examples:
        echo("examples:")
        for row, key, d in result.examples:
            echo(f"  row {row} {key}: {d.field}: {_show(d.before)} → {_show(d.after)}")
    if result.snapshot:
        echo(f"snapshot (the rollback): {result.snapshot}, {result.snapshot_rows:,} rows")
        echo(f"  undo with: bulkpatch run {result.snapshot} --base-url {base_url}")
    if result.irreversible.total():
        warn(
            f"{result.irreversible.total():,} before-values are not in the snapshot: keys that did not"
            f" exist (a PATCH cannot remove them) or values no CSV cell carries:"
            f" {result.irreversible.describe()}; a .jsonl --snapshot keeps the latter"
        )
    tail = f"{result.unchanged:,} unchanged, {result.not_found:,} not found"
    echo(f"Plan: {result.to_change:,} to change, {tail}.")


@click.command()
@click.argument("input", metavar="INPUT")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="[default: from the extension]")
@_api_options
def verify(input: str, fmt: str | None, **kw: Any) -> int:
    """Check that the live workloads carry INPUT's values (after a run). Exit 1 on drift.

    Reads back INPUT's rows in batches (one GET per 100 rows); a row drifts when a field it
    sets differs live, or its workload is gone.
    """
    from bulkpatch.operations import verify_async

    ticker = _Ticker("verify", kw["quiet"])
    connection = _connection(kw)
    result = run_loop(verify_async(input, format=fmt, notice=warn, on_progress=ticker, **connection))
    ticker.done()
    # `verify … | head -1`: a reader that goes away changes neither the check nor its exit status.
    print_safely(lambda: _print_verify(result, input, connection["base_url"]))
    return result.exit_code


def _print_verify(result: VerifyResult, input: str, base_url: str | None) -> None:
    echo = click.echo
    echo(f"verify: {result.rows:,} rows of {input} against {base_url} ({_gets(result.requests)})")
    echo(f"  = {result.matching:,} match")
    echo(f"  ~ {result.drifted:,} differ")
    for row, key, d in result.examples:
        echo(f"      row {row} {key}: {d.field}: live {_show(d.before)}, input {_show(d.after)}")
    echo(f"  ! {result.not_found:,} not found{': ' + ', '.join(result.missing) if result.missing else ''}")
    if result.not_checked:
        echo(f"  - {result.not_checked:,} invalid or empty rows not checked")
