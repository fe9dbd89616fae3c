"""The ``geoscreen`` command group and its error handling.

User errors (:class:`~geoscreen.errors.GeoscreenError`, bad options) print one line
and exit 2; ``--debug`` (or ``GEOSCREEN_DEBUG=1``) shows the traceback instead.
Command modules attach their commands to :data:`cli`.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from geoscreen import __version__
from geoscreen.errors import GeoscreenError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.version_option(__version__, prog_name="geoscreen")
def cli(debug: bool) -> None:
    """geoscreen: screen imagery for places that match a profile; people review them."""


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("GEOSCREEN_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    # --debug may be given anywhere on the line, also after the command name.
    args = [a for a in args if a != "--debug"]
    try:
        result = cli.main(args=args, prog_name="geoscreen", standalone_mode=False)
    except GeoscreenError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"geoscreen: error: {exc.message}", err=True)
        return EXIT_USER_ERROR
    except click.exceptions.UsageError as exc:  # one line, like every other refusal
        command = exc.ctx.command_path if exc.ctx is not None else "geoscreen"
        message = exc.format_message().rstrip(".")
        click.echo(
            f"geoscreen: error: {message}. See '{command} --help' for the options.", err=True
        )
        return EXIT_USER_ERROR
    except click.exceptions.ClickException as exc:
        click.echo(f"geoscreen: error: {exc.format_message()}", err=True)
        return EXIT_USER_ERROR
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("geoscreen: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    return int(result) if isinstance(result, int) else 0
