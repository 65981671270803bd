"""The ``bulkpatch`` command: a click group whose commands live in ``cli_run`` and ``cli_tools``.

Every expected failure ends as one line on stderr and an exit status (2 for usage and
configuration, before anything is sent); no traceback reaches the user. Commands import the
engine only when they run, so ``--help`` and ``--version`` start fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from bulkpatch import __version__
from bulkpatch.cli.exits import EXIT_INTERRUPTED as _EXIT_INTERRUPTED
from bulkpatch.cli.exits import EXIT_USAGE as _EXIT_USAGE
from bulkpatch.cli.exits import exit_status
from bulkpatch.cli.operations import export, plan, verify
from bulkpatch.cli.run import run
from bulkpatch.cli.state import state_command
from bulkpatch.cli.stderr import fail, format_in, use_format
from bulkpatch.cli.terminal import ensure_std_streams, quiet_stdout
from bulkpatch.cli.tools import demo, mock, report
from bulkpatch.errors import BulkPatchError


class _Group(click.Group):
    """A group whose usage errors are one line on stderr (JSON with ``--log-format json``), exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        given = kwargs.get("args", args[0] if args else None)
        named = format_in(list(sys.argv[1:] if given is None else given))
        use_format(named or "text", named=named is not None)
        try:
            self._main(*args, **kwargs)
        finally:
            use_format("text")  # the next command in this process (tests, library callers) starts afresh

    def _main(self, *args: Any, **kwargs: Any) -> None:
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(_EXIT_USAGE)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "bulkpatch"
            fail(f"{exc.format_message()} (see --help)", _EXIT_USAGE, prefix=f"{command}: ")
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code, prefix="bulkpatch: ")
        except click.exceptions.Abort:
            fail("interrupted", _EXIT_INTERRUPTED, prefix="bulkpatch: ")
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except BulkPatchError as exc:
            fail(str(exc), exit_status(exc))
        except KeyboardInterrupt:
            fail("interrupted", _EXIT_INTERRUPTED, prefix="bulkpatch: ")
        except BrokenPipeError:
            # stdout went away (`bulkpatch report … | head -1`): what was asked is done.
            quiet_stdout()
            sys.exit(rv if isinstance(rv, int) else 1)
        sys.exit(rv if isinstance(rv, int) else 0)


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


for _command in (run, report, state_command, export, plan, verify, mock, demo):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    ensure_std_streams()
    cli.main(prog_name="bulkpatch")
