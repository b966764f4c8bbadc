"""``emaild token add|list|revoke``: HTTP API tokens."""

from __future__ import annotations

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table


@click.group("token")
def token_group() -> None:
    """HTTP API tokens (Authorization: Bearer)."""


@token_group.command("add")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(["read", "write", "admin"]),
    default="read",
    show_default=True,
    help="read: look; write: change cases and reply; admin: also quarantine retry, erase, export.",
)
@pass_ctx
def add_cmd(ctx: Context, name: str, scope: str) -> None:
    """Create token NAME; the token is printed once, alone on the last line."""
    from emaild.casework.tokens import add_token

    app = ctx.app()
    now = app.pipeline.clock()
    secret = app.db.run(lambda s: add_token(s, name, scope, now))
    click.echo(f"token {name} ({scope}) created; it is shown only now:")
    click.echo(secret)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array for scripts.")
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """Tokens by name (never the secrets: only their hashes are stored)."""
    from emaild.casework.tokens import list_tokens

    app = ctx.app()
    with app.db.session() as session:
        rows = list_tokens(session)
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["NAME", "SCOPE", "CREATED"], [[r["name"], r["scope"], r["created_at"]] for r in rows]
    )


@token_group.command("revoke")
@click.argument("name")
@pass_ctx
def revoke_cmd(ctx: Context, name: str) -> None:
    """Revoke token NAME at once."""
    from emaild.casework.tokens import revoke_token

    app = ctx.app()
    app.db.run(lambda s: revoke_token(s, name))
    click.echo(f"token {name} revoked")


def register(group: click.Group) -> None:
    group.add_command(token_group)
