"""The ``emaild`` command line. Each command group lives in its own module."""

from __future__ import annotations

import sys
from importlib import import_module

import click

from emaild.cli.base import Context, EmaildGroup, add_config_option
from emaild.errors import EX_SOFTWARE


@click.group(cls=EmaildGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Config file (default: $EMAILD_CONFIG, else built-in defaults).",
)
@click.version_option(package_name="emaild")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """emaild: turn support email into cases."""
    ctx.obj = Context(config_path)


# One module per command group, each with ``register(group)``.
COMMAND_MODULES = (
    "address",
    "cases",
    "check",
    "ingest",
    "mailbox",
    "outbox",
    "postfix",
    "quarantine",
    "rules",
    "run",
    "status",
    "token",
    "webhook",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        import_module(f"emaild.cli.{name}").register(cli)
    for command in cli.commands.values():
        add_config_option(command)


_register()


def main() -> None:
    """Console entry point."""
    try:
        cli(prog_name="emaild")
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: one line for the user, the traceback in the log
        import traceback

        traceback.print_exc(file=sys.stderr)
        click.echo(f"emaild: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EX_SOFTWARE)
