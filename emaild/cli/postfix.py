"""``emaild postfix maps``: Postfix's recipient and transport maps from the address book."""

from __future__ import annotations

from pathlib import Path

import click

from emaild.cli.base import Context, pass_ctx
from emaild.errors import ConfigError


@click.group("postfix")
def postfix_group() -> None:
    """Postfix integration: maps generated from the routing addresses."""


@postfix_group.command("maps")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the maps (default: postfix.maps_dir).",
)
@pass_ctx
def maps_cmd(ctx: Context, directory: Path | None) -> None:
    """Write emaild_recipients and emaild_transport, then postmap them.

    Every routing address and alias is listed: relay_recipient_maps makes
    Postfix refuse other recipients at RCPT, transport_maps sends these to
    postfix.transport. Exit 75 when a map cannot be written or compiled.
    """
    written = update_maps(ctx, directory)
    if written is None:
        raise ConfigError("no directory: use --dir DIR or set postfix.maps_dir", key="postfix")


def update_maps(ctx: Context, directory: Path | None = None) -> object | None:
    """Rewrite the maps (``directory``, else postfix.maps_dir); None when neither is set."""
    from emaild.postfix import write_maps

    settings = ctx.config.postfix
    target = directory or (Path(settings.maps_dir) if settings.maps_dir else None)
    if target is None:
        return None
    book = ctx.app().pipeline.addresses
    book.invalidate()
    addresses = [a for routing in book.all() for a in routing.all_addresses()]
    written = write_maps(addresses, settings, target)
    how = f"compiled with {settings.postmap}" if written.compiled else "not compiled"
    click.echo(f"postfix maps: {written.addresses} addresses in {target} ({how})", err=True)
    return written


def register(group: click.Group) -> None:
    group.add_command(postfix_group)
