"""The ``emaild`` command line. Each command group lives in its own module."""

from __future__ import annotations

import sys
from importlib import import_module

import click

import emaild
from emaild.cli.base import Context, EmaildGroup, add_config_option
from emaild.errors import EX_SOFTWARE

# Each command, and the module that defines it (``register(group)`` adds it).
# A module is imported only when one of its commands runs, so ``--version``
# and an MTA's ``emaild ingest`` don't pay for every other command's imports.
COMMANDS = {
    "address": "address",
    "blobs": "blobs",
    "cases": "cases",
    "check": "check",
    "erase": "privacy",
    "export": "privacy",
    "import": "ingest",
    "ingest": "ingest",
    "mailbox": "mailbox",
    "outbox": "outbox",
    "poll": "mailbox",
    "postfix": "postfix",
    "purge": "purge",
    "quarantine": "quarantine",
    "report": "report",
    "rules": "rules",
    "run": "run",
    "status": "status",
    "token": "token",
    "web": "webform",
    "webhook": "webhook",
    "webform": "webform",
}


class LazyGroup(EmaildGroup):
    """The top-level group: commands are loaded from their module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            import_module(f"emaild.cli.{COMMANDS[cmd_name]}").register(self)
            for command in self.commands.values():
                add_config_option(command)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Config file (default: $EMAILD_CONFIG, else built-in defaults).",
)
@click.version_option(emaild.__version__, prog_name="emaild")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """emaild: turn support email into cases."""
    ctx.obj = Context(config_path)


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
