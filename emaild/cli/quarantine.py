"""``emaild quarantine list|show|retry``."""

from __future__ import annotations

import sys

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table
from emaild.errors import EX_DATAERR, EX_NOINPUT, InputError


@click.group("quarantine")
def quarantine_group() -> None:
    """Messages that could not be processed, kept raw with their error."""


@quarantine_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include released and discarded entries.")
@click.option("--json", "as_json", is_flag=True, help="The entries as JSON for scripts.")
@pass_ctx
def list_cmd(ctx: Context, show_all: bool, as_json: bool) -> None:
    """List quarantined messages (held ones unless --all)."""
    from emaild.quarantine import list_entries

    rows = list_entries(ctx.app().db, None if show_all else "held")
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["ID", "STATUS", "CHANNEL", "REASON", "STAGE", "SIZE", "ERROR"],
        [
            [
                r["id"],
                r["status"],
                r["channel"],
                r["reason"],
                r["stage"],
                r["raw_size"],
                (r["error"].splitlines() or [""])[0][:70],  # the stack is for `show`
            ]
            for r in rows
        ],
    )


@quarantine_group.command("show")
@click.argument("entry_id", type=int)
@click.option("--raw", is_flag=True, help="Write the raw message to stdout.")
@click.option("--json", "as_json", is_flag=True, help="The entry as JSON (with its headers).")
@pass_ctx
def show_cmd(ctx: Context, entry_id: int, raw: bool, as_json: bool) -> None:
    """Show one entry: the error, the envelope and the headers."""
    from emaild.quarantine import entry_json, get_entry

    app = ctx.app()
    entry = get_entry(app.db, entry_id)
    if entry is None:
        click.echo(f"emaild: no quarantine entry {entry_id}", err=True)
        sys.exit(EX_NOINPUT)
    if raw:
        if not entry.raw_sha256 or not app.blobs.exists(entry.raw_sha256):
            click.echo(f"emaild: entry {entry_id} has no stored raw message", err=True)
            sys.exit(EX_NOINPUT)
        sys.stdout.buffer.write(app.blobs.read(entry.raw_sha256))
        return
    data = entry_json(entry)
    if as_json:
        data["headers"] = entry.headers
        echo_json(data)
        return
    for key, value in data.items():
        click.echo(f"{key}: {value}")
    click.echo("headers:")
    for line in entry.headers.splitlines()[:60]:
        click.echo(f"  {line}")


@quarantine_group.command("retry")
@click.argument("entry_ids", type=int, nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every held entry.")
@click.option(
    "--release",
    is_flag=True,
    help="Override a rule's or accept-from's quarantine: let the message through.",
)
@pass_ctx
def retry_cmd(ctx: Context, entry_ids: tuple[int, ...], retry_all: bool, release: bool) -> None:
    """Run held messages through the pipeline again (after fixing the cause).

    A message a rule or accept-from quarantined is quarantined again by the same
    policy; --release lets it through (recorded in its decision trace).
    """
    from emaild.quarantine import list_entries, retry

    if not entry_ids and not retry_all:
        raise click.UsageError("name entry ids or use --all")
    app = ctx.app()
    ids = list(entry_ids)
    if retry_all:
        ids = [r["id"] for r in list_entries(app.db, "held")]
    if not ids:
        click.echo("emaild: nothing to retry (name entry ids or use --all)", err=True)
        sys.exit(EX_NOINPUT)
    failed = 0
    for entry_id in ids:
        try:
            result = retry(app.pipeline, entry_id, release=release)
        except InputError as exc:
            click.echo(f"emaild: {exc}", err=True)
            failed += 1
            continue
        where = f" case {result.case_number}" if result.case_number else ""
        click.echo(f"{entry_id}: {result.outcome.value}{where} {result.detail}".rstrip())
        failed += result.outcome.value == "quarantined"
    if failed:
        sys.exit(EX_DATAERR)


def register(group: click.Group) -> None:
    group.add_command(quarantine_group)
