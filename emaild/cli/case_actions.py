"""``emaild cases close|reopen|assign|reply|note|events``: the API's case operations.

Changes are made as the actor ``cli`` and go through ``emaild.casework`` like
the API's, so they write the same events; a reply is queued in the outbox and
sent by the daemon (or ``emaild outbox flush``).
"""

from __future__ import annotations

from typing import Any

import click

from emaild.cli.base import Context, pass_ctx, read_input
from emaild.cli.output import echo_json, echo_table

ACTOR = "cli"


def _change(ctx: Context, number: int, changes: dict[str, Any]) -> None:
    from emaild.casework.ops import update_case

    app = ctx.app()
    now = app.pipeline.clock()
    case = app.db.run(lambda s: update_case(s, number, changes, actor=ACTOR, now=now))
    click.echo(f"case {number}: {case.status}, owner {case.owner or '-'}, version {case.version}")


@click.command("close")
@click.argument("number", type=int)
@pass_ctx
def close_cmd(ctx: Context, number: int) -> None:
    """Close case NUMBER (later replies follow the closed-case policy)."""
    _change(ctx, number, {"status": "closed"})


@click.command("reopen")
@click.argument("number", type=int)
@pass_ctx
def reopen_cmd(ctx: Context, number: int) -> None:
    """Reopen case NUMBER (status open)."""
    _change(ctx, number, {"status": "open"})


@click.command("assign")
@click.argument("number", type=int)
@click.argument("owner")
@pass_ctx
def assign_cmd(ctx: Context, number: int, owner: str) -> None:
    """Make OWNER the owner of case NUMBER ("" to unassign)."""
    _change(ctx, number, {"owner": owner})


@click.command("reply")
@click.argument("number", type=int)
@click.option("--text", "text_file", required=True, help="FILE with the reply text, - = stdin.")
@click.option("--to", "to", multiple=True, help="Recipient (default: the case's customer).")
@click.option("--cc", "cc", multiple=True, help="Cc (default: the case's other participants).")
@click.option("--subject", default="", help="Subject (default: Re: the case's subject).")
@click.option("--close", is_flag=True, help="Close the case with the reply.")
@click.option(
    "--template", default="", help="Render the body from this template; the text is agent.text."
)
@pass_ctx
def reply_cmd(
    ctx: Context,
    number: int,
    text_file: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    subject: str,
    close: bool,
    template: str,
) -> None:
    """Answer the customer of case NUMBER; queued in the outbox, sent by the daemon."""
    from emaild.casework.reply import ReplyRequest, queue_reply

    text = read_input(text_file).decode("utf-8", "replace")
    app = ctx.app()
    services = app.services
    request = ReplyRequest(
        text=text,
        to=list(to) or None,
        cc=list(cc) or None,
        subject=subject,
        close=close,
        template=template,
    )
    now = app.pipeline.clock()

    def work(session: Any) -> Any:
        from emaild.casework.ops import get_case

        routing = services.addresses.lookup(get_case(session, number).routing_address)
        return queue_reply(
            session,
            signer=services.signer,
            blobs=app.blobs,
            own_addresses=services.addresses.own_addresses(),
            from_name=routing.name if routing else "",
            number=number,
            request=request,
            actor=ACTOR,
            now=now,
            templates=services.templates,
        )

    queued = app.db.run(work)
    click.echo(f"reply {queued.message_id} queued for {', '.join(queued.recipients)}")


@click.command("note")
@click.argument("number", type=int)
@click.argument("text")
@pass_ctx
def note_cmd(ctx: Context, number: int, text: str) -> None:
    """Add an internal note to case NUMBER (never mailed); TEXT - = stdin."""
    from emaild.casework.ops import add_note

    if text == "-":
        text = read_input("-").decode("utf-8", "replace")
    app = ctx.app()
    now = app.pipeline.clock()
    event = app.db.run(lambda s: add_note(s, number, text, actor=ACTOR, now=now))
    click.echo(f"note added to case {number} (event {event})")


@click.command("events")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="A JSON array for scripts.")
@pass_ctx
def events_cmd(ctx: Context, number: int, as_json: bool) -> None:
    """The history of case NUMBER: who did what, when."""
    from emaild.casework.events import list_events
    from emaild.casework.ops import get_case

    app = ctx.app()
    with app.db.session() as session:
        get_case(session, number)
        rows = list_events(session, number, limit=10_000)
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["ID", "AT", "ACTOR", "EVENT", "DETAIL"],
        [[e["id"], e["at"], e["actor"], e["kind"], _detail(e["data"])] for e in rows],
    )


def _detail(data: dict[str, Any]) -> str:
    if "to" in data and "from" in data:
        return f"{data.get('field', '')}: {data['from']} -> {data['to']}"
    text = " ".join(f"{k}={v}" for k, v in data.items())
    return text[:80]


COMMANDS = (close_cmd, reopen_cmd, assign_cmd, reply_cmd, note_cmd, events_cmd)
