"""``emaild webhook add|list|remove|enable|disable|test|deliveries|replay``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table
from emaild.config_webhooks import EVENT_TYPES
from emaild.errors import EX_NOINPUT

EX_TEST_FAILED = 1


@click.group("webhook")
def webhook_group() -> None:
    """Webhooks: case events POSTed, signed, to other systems.

    Subscriptions come from [[webhook]] in the config file (they win on a name
    conflict) and from 'emaild webhook add'. The daemon delivers them.
    """


@webhook_group.command("add")
@click.argument("url")
@click.option("--name", default="", help="A name for it.  [default: from the URL]")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(EVENT_TYPES),
    help="An event type to send (repeatable).  [default: every type]",
)
@click.option("--address", "addresses", multiple=True, help="Only events of this routing address.")
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="A file holding the whsec_ secret.  [default: generate one]",
)
@click.option("--json", "as_json", is_flag=True, help="The subscription as JSON.")
@pass_ctx
def add_cmd(
    ctx: Context,
    url: str,
    name: str,
    events: tuple[str, ...],
    addresses: tuple[str, ...],
    secret_file: str | None,
    as_json: bool,
) -> None:
    """Subscribe URL to events. Prints the signing secret (keep it: shown once).

    A private, loopback or link-local target needs webhooks.allow_private.
    """
    from pathlib import Path

    from emaild.webhooks import admin

    secret = Path(secret_file).read_text(encoding="utf-8").strip() if secret_file else ""
    app = ctx.app()
    row = admin.add(
        app.db,
        app.config,
        url=url,
        events=list(events),
        addresses=list(addresses),
        name=name,
        secret=secret,
    )
    if as_json:
        echo_json(row)
        return
    click.echo(f"{row['name']}: added, POSTs to {row['url']}")
    click.echo(f"secret: {row['secret']}")


@webhook_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array for scripts.")
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """Subscriptions with their health and delivery counts."""
    from emaild.webhooks import admin

    rows = admin.list_all(ctx.app().db)
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["NAME", "SOURCE", "ENABLED", "EVENTS", "PENDING", "FAILED", "URL", "PROBLEM"],
        [
            [
                r["name"],
                r["source"],
                "yes" if r["enabled"] else "no",
                ",".join(r["events"]) or "*",
                r["pending"],
                r["failed"],
                r["url"][:60],
                r["disabled_reason"]
                or (f"failing since {r['failing_since'][:19]}" if r["failing_since"] else ""),
            ]
            for r in rows
        ],
    )


@webhook_group.command("remove")
@click.argument("name")
@pass_ctx
def remove_cmd(ctx: Context, name: str) -> None:
    """Remove a subscription added here, with its deliveries."""
    from emaild.webhooks import admin

    admin.remove(ctx.app().db, name)
    click.echo(f"{name}: removed")


@webhook_group.command("enable")
@click.argument("name")
@pass_ctx
def enable_cmd(ctx: Context, name: str) -> None:
    """Enable a subscription (after its receiver's 410 Gone); waiting events go out."""
    from emaild.webhooks import admin

    admin.set_enabled(ctx.app().db, name, True)
    click.echo(f"{name}: enabled")


@webhook_group.command("disable")
@click.argument("name")
@pass_ctx
def disable_cmd(ctx: Context, name: str) -> None:
    """Disable a subscription: it collects no new events until enabled."""
    from emaild.webhooks import admin

    admin.set_enabled(ctx.app().db, name, False)
    click.echo(f"{name}: disabled")


@webhook_group.command("test")
@click.argument("name")
@pass_ctx
def test_cmd(ctx: Context, name: str) -> None:
    """POST a signed webhook.test event now; exit 1 unless the receiver answers 2xx."""
    from emaild.webhooks import admin

    app = ctx.app()
    result = admin.test(app.db, app.config, name)
    if result.ok:
        click.echo(f"{name}: HTTP {result.status} in {result.duration_ms} ms")
        return
    click.echo(f"{name}: failed: {result.error}", err=True)
    sys.exit(EX_TEST_FAILED)


@webhook_group.command("deliveries")
@click.option("--failed", is_flag=True, help="Only given up, or pending after a failure.")
@click.option("--webhook", default="", help="Only this subscription's.")
@click.option("--limit", default=100, show_default=True, help="Newest N deliveries.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array for scripts.")
@pass_ctx
def deliveries_cmd(ctx: Context, failed: bool, webhook: str, limit: int, as_json: bool) -> None:
    """Deliveries, newest first: event, status, attempts, last error."""
    from emaild.webhooks import admin

    rows = admin.deliveries(ctx.app().db, failed=failed, webhook=webhook, limit=limit)
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["ID", "WEBHOOK", "TYPE", "CASE", "STATUS", "TRIES", "LAST", "ERROR"],
        [
            [
                r["id"],
                r["webhook"],
                r["type"],
                r["case"] if r["case"] is not None else "-",
                r["status"],
                r["attempts"],
                r["last_status"] if r["last_status"] is not None else "-",
                r["last_error"][:60],
            ]
            for r in rows
        ],
    )


@webhook_group.command("replay")
@click.argument("delivery_ids", type=int, nargs=-1)
@click.option(
    "--since",
    default=None,
    help="Every delivery of events since this ISO 8601 time (UTC if no zone).",
)
@pass_ctx
def replay_cmd(ctx: Context, delivery_ids: tuple[int, ...], since: str | None) -> None:
    """Send deliveries again (same webhook-id: receivers that deduplicate see them once)."""
    from emaild.webhooks import admin

    if bool(delivery_ids) == bool(since):
        raise click.UsageError("name delivery ids or use --since, not both")
    when = None
    if since:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise click.UsageError(f"--since: not an ISO 8601 time: {since!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    ids = list(delivery_ids) or None
    done = admin.replay(ctx.app().db, ids=ids, since=when)
    for delivery_id in done:
        click.echo(f"{delivery_id}: pending")
    missing = sorted(set(delivery_ids) - set(done))
    for delivery_id in missing:
        click.echo(f"emaild: {delivery_id}: no such delivery (or being sent now)", err=True)
    if missing:
        sys.exit(EX_NOINPUT)


def register(group: click.Group) -> None:
    group.add_command(webhook_group)
