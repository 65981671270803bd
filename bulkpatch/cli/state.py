"""``bulkpatch state FILE``: what the memory knows — targets, recent runs, failing keys, and with
``--gone`` the keys the latest complete input no longer has."""

from __future__ import annotations

import time
from typing import Any

import click
import orjson
from rich.console import Console

from bulkpatch.cli.terminal import Stdout, print_safely


@click.command("state")
@click.argument("state_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--failing",
    type=click.IntRange(0, 1_000_000),
    default=20,
    show_default=True,
    help="Failing keys to list.",
)
@click.option(
    "--gone", "list_gone", is_flag=True, help="List the keys the latest complete run's input no longer has."
)
def state_command(state_file: str, as_json: bool, failing: int, list_gone: bool) -> int:
    """Show a memory database (--state, or bulkpatch-memory.db beside a ledger): targets, recent
    runs, keys failing now; with --gone, the keys deleted at the source.

    Exit status: 0 no key failing; 1 some keys failing (the next run with --state sends them again).
    With --gone: 0 always.
    """
    from bulkpatch.records.memory_view import describe, gone

    if list_gone:
        keys = gone(state_file)
        if as_json:
            print_safely(lambda: click.echo(orjson.dumps(keys, default=str).decode()))
        else:
            print_safely(lambda: _print_gone(Stdout(), keys))
        return 0
    found = describe(state_file, failing_shown=failing)
    if as_json:
        print_safely(lambda: click.echo(orjson.dumps(found, default=str).decode()))
    else:
        print_safely(lambda: _print_state(Stdout(), state_file, found))
    return 1 if any(t["failing"] for t in found["targets"]) else 0


def _when(at: object) -> str:
    """A Unix time as UTC, or "?" for what a hand edit left there."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _print_gone(out: Console, keys: list[dict[str, Any]]) -> None:
    for g in keys:
        out.print(f"{g['key']}\t{g['input']}\t{g['target']}", markup=False, highlight=False)


def _print_state(out: Console, path: str, found: dict[str, Any]) -> None:
    out.print(f"[bold]memory[/] {path}", highlight=False)
    for t in found["targets"]:
        out.print(
            f"  {t['target']}: {t['applied']:,} keys applied, {t['failing']:,} failing, {t['gone']:,} gone",
            markup=False,
        )
    if found["runs"]:
        out.print("recent runs:")
        for r in found["runs"]:
            at = r["started"]
            started = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if isinstance(at, (int, float)) else "?"
            )
            counts = "  ".join(
                f"{k} {r[k]:,}"
                for k in ("sent", "ok", "failed", "invalid", "unchanged", "gone")
                if isinstance(r[k], int) and r[k]
            )
            outcome = r["outcome"] or "did not end (still running, or killed)"
            out.print(f"  #{r['id']}  {started} UTC  {outcome}  {counts}  {r['input']}", markup=False)
    if found["failing"]:
        out.print("failing keys (sent again by the next run with --state):")
        for f in found["failing"]:
            code = f" HTTP {f['http_status']}" if f["http_status"] else ""
            out.print(f"  {f['key']}  {f['status']}{code}  {f['error'] or ''}", markup=False)
