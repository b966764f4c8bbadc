"""``emaild check``."""

from __future__ import annotations

import click

from emaild.cli.base import Context, pass_ctx


@click.command("check")
@pass_ctx
def check_cmd(ctx: Context) -> None:
    """Validate config, rules and templates; exit 78 with file:line: problem if wrong."""
    from emaild.checks import run_checks

    config = ctx.config
    click.echo(f"config: {config.source or 'built-in defaults'}: ok")
    for line in run_checks(config):
        click.echo(f"{line}: ok")


def register(group: click.Group) -> None:
    group.add_command(check_cmd)
