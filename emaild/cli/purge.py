"""``emaild purge``: apply the ``[retention]`` rules now (the daemon does it daily)."""

from __future__ import annotations

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json


@click.command("purge")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
@pass_ctx
def purge_cmd(ctx: Context, dry_run: bool, as_json: bool) -> None:
    """Remove what the [retention] rules say is too old: raw bytes and attachments
    of long-closed cases, old quarantine entries, old dropped mail.

    Blobs still used by another message or case are kept. Every rule is off
    (0 days) unless configured; with none on, nothing is removed.
    """
    from emaild.privacy.retention import purge

    app = ctx.app()
    rules = app.config.retention
    report = purge(app.db, app.blobs, rules, app.pipeline.clock(), dry_run=dry_run)
    data = {**report.as_json(), "rules": rules.model_dump(exclude={"run_hour"})}
    if as_json:
        echo_json(data)
        return
    if not rules.enabled:
        click.echo("no [retention] rule is on: nothing to purge")
        return
    verb = "would remove" if dry_run else "removed"
    blobs = report.blobs
    click.echo(
        f"{verb}: raw bytes of {report.raw_messages} messages ({report.attachments} attachments) "
        f"on {report.cases} closed cases, {report.quarantine_entries} quarantine entries, "
        f"{report.dropped_messages} dropped messages, "
        f"{report.webhook_deliveries} finished webhook deliveries; "
        f"{blobs.deleted} blobs ({blobs.bytes} bytes)"
        + (f", {blobs.kept} kept (still in use)" if blobs.kept else "")
    )


def register(group: click.Group) -> None:
    group.add_command(purge_cmd)
