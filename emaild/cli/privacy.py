"""``emaild erase`` and ``emaild export``: one person's data, removed or handed over."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json


@click.command("erase")
@click.option("--contact", required=True, help="The person's email address.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="What was removed, as JSON.")
@pass_ctx
def erase_cmd(ctx: Context, contact: str, yes: bool, as_json: bool) -> None:
    """Remove a person's messages, attachments only they sent, participant rows and
    every other copy of their address; their cases keep a contact.erased event."""
    from emaild.casework.events import CLI
    from emaild.privacy.erase import erase

    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("erasing cannot be undone: pass --yes")
        click.confirm(f"erase every trace of {contact}? this cannot be undone", abort=True)
    app = ctx.app()
    report = erase(
        app.db,
        app.blobs,
        contact,
        actor=CLI,
        now=app.pipeline.clock(),
        own_addresses=app.services.addresses.own_addresses(),
    )
    if as_json:
        echo_json(report.as_json())
        return
    click.echo(
        f"erased: {report.messages} messages, {report.participants} participant rows, "
        f"{report.quarantine_entries} quarantine entries, {report.outbox_items} outbox items; "
        f"{report.rows_rewritten} rows and {report.blobs_rewritten} blobs rewritten; "
        f"{report.blobs.deleted} blobs deleted ({report.blobs.kept} kept: used by others); "
        f"tombstone on cases {', '.join(map(str, report.cases)) or '-'}"
    )


@click.command("export")
@click.option("--contact", required=True, help="The person's email address.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Writes OUTPUT.mbox and OUTPUT.json (mode 0600).",
)
@pass_ctx
def export_cmd(ctx: Context, contact: str, output: Path) -> None:
    """Write a person's data: their messages as an mbox (mboxrd, byte-exact once
    unquoted) and their cases, messages and quarantine entries as JSON."""
    from emaild.privacy.export import collect, mbox_chunks

    app = ctx.app()
    with app.db.session(readonly=True) as session:
        data = collect(session, contact, app.pipeline.clock())
    mbox, meta = Path(f"{output}.mbox"), Path(f"{output}.json")
    with _private(mbox) as fh:
        for chunk in mbox_chunks(app.blobs, data):
            fh.write(chunk)
    with _private(meta) as fh:
        fh.write(json.dumps(data, indent=2, ensure_ascii=False).encode() + b"\n")
    click.echo(
        f"{len(data['messages'])} messages, {len(data['quarantine'])} quarantined: {mbox}, {meta}"
    )


def _private(path: Path) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb")


def register(group: click.Group) -> None:
    group.add_command(erase_cmd)
    group.add_command(export_cmd)
