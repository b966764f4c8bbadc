"""``emaild outbox list|retry|flush``: outgoing mail for operators."""

from __future__ import annotations

import sys

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table
from emaild.errors import EX_NOINPUT, EX_TEMPFAIL


@click.group("outbox")
def outbox_group() -> None:
    """Outgoing mail (auto-responses, notices) and its delivery."""


@outbox_group.command("list")
@click.option(
    "--status",
    type=click.Choice(["queued", "sent", "failed"]),
    default=None,
    help="Only items with this status.",
)
@click.option("--limit", default=1000, show_default=True, help="Newest N items.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array for scripts.")
@pass_ctx
def list_cmd(ctx: Context, status: str | None, limit: int, as_json: bool) -> None:
    """List outbox items, newest first (status queued, sent or failed)."""
    from emaild.outbox.queue import item_json, list_items

    app = ctx.app()
    with app.db.session() as session:
        rows = [item_json(item) for item in list_items(session, status, limit)]
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["ID", "STATUS", "KIND", "CASE", "TO", "TRIES", "NEXT/SENT", "ERROR"],
        [
            [
                r["id"],
                r["status"],
                r["kind"],
                r["case"] if r["case"] is not None else "-",
                r["to"],
                r["attempts"],
                (r["sent_at"] or r["next_attempt_at"])[:19],
                r["last_error"][:60],
            ]
            for r in rows
        ],
    )


@outbox_group.command("retry")
@click.argument("item_ids", type=int, nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every queued or failed item.")
@pass_ctx
def retry_cmd(ctx: Context, item_ids: tuple[int, ...], retry_all: bool) -> None:
    """Make failed or waiting items due now, with a fresh set of attempts.

    Sent items are never sent again. The daemon (or 'emaild outbox flush')
    delivers them.
    """
    from emaild.clock import utcnow
    from emaild.outbox.queue import requeue

    if not item_ids and not retry_all:
        raise click.UsageError("name item ids or use --all")
    app = ctx.app()
    wanted = None if retry_all else list(item_ids)
    changed = app.db.run(lambda s: requeue(s, wanted, utcnow()))
    missing = sorted(set(item_ids) - set(changed))
    for item_id in changed:
        click.echo(f"{item_id}: queued")
    for item_id in missing:
        click.echo(f"emaild: {item_id}: no queued or failed item with this id", err=True)
    if missing:
        sys.exit(EX_NOINPUT)


@outbox_group.command("flush")
@pass_ctx
def flush_cmd(ctx: Context) -> None:
    """Try every queued item once now (ignoring retry timers), then exit.

    Exit 0 when nothing is left waiting on a temporary failure, 75 (EX_TEMPFAIL)
    when some items stay queued (relay down, 4xx).
    """
    from emaild.outbox.delivery import deliver_due

    report = deliver_due(ctx.app(), ignore_schedule=True)
    click.echo(report.summary())
    if report.deferred:
        sys.exit(EX_TEMPFAIL)


def register(group: click.Group) -> None:
    group.add_command(outbox_group)
