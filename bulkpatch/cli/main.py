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
from bulkpatch.cli.operations import export, plan, verify
from bulkpatch.cli.run import run
from bulkpatch.cli.terminal import ensure_std_streams, fail, quiet_stdout
from bulkpatch.cli.tools import demo, mock, report, state_command
from bulkpatch.errors import AuthError, BulkPatchError, ConfigError, InputError, MalformedInput

_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130


class _Group(click.Group):
    """A group whose usage errors are one line on stderr, exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        rv: Any = None
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(_EXIT_USAGE)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "bulkpatch"
            fail(f"{command}: {exc.format_message()} (see --help)", _EXIT_USAGE)
        except click.ClickException as exc:
            fail(f"bulkpatch: {exc.format_message()}", exc.exit_code)
        except click.exceptions.Abort:
            fail("bulkpatch: interrupted", _EXIT_INTERRUPTED)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except (ConfigError, AuthError, MalformedInput) as exc:
            fail(f"bulkpatch: error: {exc}", _EXIT_USAGE)
        except InputError as exc:
            fail(f"bulkpatch: error: {exc}", 1)
        except BulkPatchError as exc:
            fail(f"bulkpatch: error: {exc}", 1)
        except KeyboardInterrupt:
            fail("bulkpatch: interrupted", _EXIT_INTERRUPTED)
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
