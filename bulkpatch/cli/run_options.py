"""The options of ``bulkpatch run``, declared once: the command applies them all with ``run_options``.

``run.py`` keeps what the command does; this module keeps what it accepts, with the help text a
user reads and the environment variables and config file keys (``config.py``) behind each. The
values arrive as one typed ``RunArgs``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from bulkpatch.cli.config import use_config
from bulkpatch.defaults import DEFAULT_PATH

if TYPE_CHECKING:
    from bulkpatch.options import RunOptions

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.argument("input", metavar="INPUT"),
    click.option(
        "--config",
        type=click.Path(dir_okay=False),
        envvar="BULKPATCH_CONFIG",
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=use_config,
        help='Settings from a TOML file; its keys are the long option names (base-url = "...",'
        ' rate = 50, header = ["X-Tenant: 7"]). A flag beats its environment variable, which beats'
        " the file, which beats the default. Never a secret in it.",
    ),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(["csv", "jsonl"]),
        help="Input format.  [default: from the extension]",
    ),
    click.option(
        "--base-url",
        envvar="BULKPATCH_BASE_URL",
        show_envvar=True,
        help="API root, e.g. https://eu2-cloud.acronis.com.",
    ),
    click.option(
        "--path",
        "path",
        default=DEFAULT_PATH,
        show_default=True,
        help="Path template; each {field} is filled from the row and left out of the body.",
    ),
    click.option("--method", default="PATCH", show_default=True, help="HTTP method."),
    click.option(
        "--schema",
        type=click.Choice(["workload", "any"]),
        default="workload",
        show_default=True,
        help="workload: validate the v5 PATCH body; any: any JSON object.",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(1, 10_000),
        default=16,
        show_default=True,
        help="Requests in flight at most.",
    ),
    click.option(
        "--processes",
        type=click.IntRange(1, 64),
        default=1,
        show_default=True,
        help="Worker processes that send the requests.  Raise it (to the number of cores) only"
        " when a fast API makes bulkpatch itself use a whole CPU core.",
    ),
    click.option(
        "--rate",
        type=click.FloatRange(min=0, min_open=True),
        help="Requests per second at most, all workers together.  [default: unlimited]",
    ),
    click.option(
        "--max-attempts",
        type=click.IntRange(1, 100),
        default=5,
        show_default=True,
        help="Attempts per row, the first one included.",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=30.0,
        show_default=True,
        help="Seconds per attempt.",
    ),
    click.option(
        "-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Extra header; repeatable."
    ),
    click.option("--ledger", help="The run's ledger.  [default: INPUT.ledger.jsonl]"),
    click.option(
        "--retry-failed",
        type=click.Choice(["transient", "all"]),
        is_flag=False,
        flag_value="transient",
        default=None,
        help="Also resend failed rows: transient failures (5xx, 429, timeouts, connection errors;"
        " the default) or, with --retry-failed=all, 4xx refusals too.",
    ),
    click.option(
        "--retry-unsafe",
        is_flag=True,
        help="Resend a POST after a timeout or dropped connection, although it may have been applied.",
    ),
    click.option(
        "--max-outage",
        type=float,
        default=300.0,
        show_default=True,
        help="Seconds the API may refuse every connection before the run stops (rows left unsent).",
    ),
    click.option(
        "--limit",
        type=click.IntRange(min=1),
        help="Handle at most N rows not done yet, then stop: a canary run. Run again to go on.",
    ),
    click.option(
        "--state",
        type=click.Path(dir_okay=False),
        envvar="BULKPATCH_STATE",
        show_envvar=True,
        help="The memory (SQLite) of what was last applied per key, shared by every run that names"
        " it; and heal: every key that failed before is sent again. For nightly syncs. Without it"
        " the memory is bulkpatch-memory.db beside the ledger.",
    ),
    click.option("--full", is_flag=True, help="Send every row, whatever the memory proves applied."),
    click.option(
        "--keep-ledgers",
        type=click.IntRange(min=0),
        default=7,
        show_default=True,
        help="Archived ledgers of a changed input kept beside the ledger; older ones are removed.",
    ),
    click.option(
        "--shard",
        metavar="K/N",
        help="Send only the rows whose key hashes to shard K of N (N alone: K from"
        " JOB_COMPLETION_INDEX, a Kubernetes Indexed Job). --rate is the whole job's: each shard takes"
        " R/N. Each shard has its own ledger and state.",
    ),
    click.option(
        "--only-changed",
        is_flag=True,
        help="Read the live workloads first (one GET per 100 rows) and send only the rows that change"
        " something; the others are recorded unchanged.",
    ),
    click.option(
        "--verify",
        "verify_after",
        is_flag=True,
        help="After the run, read the workloads back and exit 1 if any differs from the input.",
    ),
    click.option("--dry-run", is_flag=True, help="Validate and map every row, show a sample, send nothing."),
    click.option(
        "--token-url",
        envvar="BULKPATCH_TOKEN_URL",
        show_envvar=True,
        help="OAuth2 token endpoint.  [default: BASE_URL/api/2/idp/token]",
    ),
    click.option(
        "--progress/--no-progress",
        default=None,
        help="Live progress on stderr.  [default: on when stderr is a terminal]",
    ),
    click.option(
        "-q", "--quiet", is_flag=True, help="No progress and no periodic status lines; the summary only."
    ),
    click.option(
        "--log-json",
        type=click.Path(dir_okay=False, writable=True),
        help="Append one JSON line per retry, concurrency or rate change, outage start and end, token"
        " renewal and stop request.",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Lines on stderr when it is no terminal (cron, kubectl logs): text, or one JSON object each"
        " (json: every line, notices and errors too, the last an end event with the exit status).",
    ),
    click.option(
        "--metrics-file",
        type=click.Path(dir_okay=False),
        help="Write the run's metrics here as Prometheus text (for node_exporter's textfile"
        " collector; name it *.prom), also when the run fails or stops.",
    ),
    click.option(
        "--notify",
        "notify_url",
        envvar="BULKPATCH_NOTIFY_URL",
        show_envvar=True,
        metavar="URL",
        help="POST a JSON summary of the run here at the end (Slack- or Teams-style incoming"
        " webhook). A webhook that fails is a warning, never a failed run.",
    ),
    click.option(
        "--notify-on",
        type=click.Choice(["failure", "always"]),
        default="failure",
        show_default=True,
        help="failure: notify only when the exit status is not 0.",
    ),
]


def run_options(command: F) -> F:
    """Apply every option of ``run`` to ``command``, in the order ``--help`` lists them."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


@dataclass(frozen=True)
class RunArgs:
    """What the command line, the environment and the config file said, as click parsed it."""

    input: str
    fmt: str | None
    base_url: str | None
    path: str
    method: str
    schema: str
    concurrency: int
    processes: int
    rate: float | None
    max_attempts: int
    timeout: float
    headers: tuple[str, ...]
    ledger: str | None
    retry_failed: str | None
    retry_unsafe: bool
    max_outage: float
    limit: int | None
    state: str | None
    full: bool
    keep_ledgers: int
    shard: str | None
    only_changed: bool
    verify_after: bool
    dry_run: bool
    token_url: str | None
    progress: bool | None
    quiet: bool
    log_json: str | None
    log_format: Literal["text", "json"]
    metrics_file: str | None
    notify_url: str | None
    notify_on: Literal["failure", "always"]


def options_of(args: RunArgs) -> RunOptions:
    """The engine's options from the parsed ones; credentials from the environment only."""
    from bulkpatch.cli.environment import credentials
    from bulkpatch.option_values import parse_header, parse_shard
    from bulkpatch.options import RunOptions
    from bulkpatch.records.resume import RetryFailed
    from bulkpatch.rows.schema import Schema

    return RunOptions(
        input=args.input,
        base_url=args.base_url,
        format=args.fmt,
        path=args.path,
        method=args.method,
        schema=Schema(args.schema),
        concurrency=args.concurrency,
        processes=args.processes,
        rate=args.rate,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        headers=dict(parse_header(h) for h in args.headers),
        ledger=args.ledger,
        retry_failed=RetryFailed(args.retry_failed or RetryFailed.NONE),
        retry_unsafe=args.retry_unsafe,
        max_outage=args.max_outage,
        limit=args.limit,
        state=args.state,
        full=args.full,
        keep_ledgers=args.keep_ledgers,
        shard=parse_shard(args.shard, dict(os.environ)) if args.shard else None,
        only_changed=args.only_changed,
        dry_run=args.dry_run,
        **credentials(),
        token_url=args.token_url,
    )
