"""``emaild cases list|show``."""

from __future__ import annotations

import sys
from datetime import UTC
from typing import Any

import click

from emaild.casework.ops import STATUSES
from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table
from emaild.errors import EX_NOINPUT


@click.group("cases")
def cases_group() -> None:
    """Look at cases."""


@cases_group.command("list")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default=None,
    help="Only cases with this status.",
)
@click.option("--priority", default=None, help="Only cases with this priority.")
@click.option("--origin", default=None, help="Only cases with this origin.")
@click.option("--owner", default=None, help="Only cases of this owner.")
@click.option("--address", "routing_address", default=None, help="Only this routing address.")
@click.option("--customer", default=None, help="Only cases of this customer address.")
@click.option("--tag", default=None, help="Only cases with this tag.")
@click.option(
    "--updated-since", type=click.DateTime(), default=None, help="Only cases changed since (UTC)."
)
@click.option("--search", "q", default=None, help="Only cases whose subject contains this.")
@click.option("--limit", default=100, show_default=True, help="Newest N cases (max 200).")
@click.option("--json", "as_json", is_flag=True, help="A JSON array for scripts.")
@pass_ctx
def list_cmd(ctx: Context, /, limit: int, as_json: bool, **filters: Any) -> None:
    """List cases, newest first (the filters are the API's GET /cases ones)."""
    from emaild.cases import case_number
    from emaild.casework.query import CaseFilter, find_cases

    if filters["updated_since"] is not None:
        filters["updated_since"] = filters["updated_since"].replace(tzinfo=UTC)
    app = ctx.app()
    with app.db.session() as session:
        rows, _next = find_cases(session, CaseFilter(**filters), limit=limit)
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["CASE", "STATUS", "PRIORITY", "MSGS", "CUSTOMER", "SUBJECT"],
        [
            [
                case_number(r["number"]),
                r["status"],
                r["priority"],
                r["message_count"],
                r["customer"],
                r["subject"][:60],
            ]
            for r in rows
        ],
    )


@cases_group.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="The case as JSON.")
@pass_ctx
def show_cmd(ctx: Context, number: int, as_json: bool) -> None:
    """Show case NUMBER: its messages, attachments and decision trace."""
    from emaild.cases import case_detail, case_number, load_case

    app = ctx.app()
    with app.db.session() as session:
        case = load_case(session, number)
        if case is None:
            click.echo(f"emaild: no case {number}", err=True)
            sys.exit(EX_NOINPUT)
        data = case_detail(case, app.config)
    if as_json:
        echo_json(data)
        return
    click.echo(f"Case {case_number(data['number'])}  {data['subject_token']}")
    for key in (
        "subject",
        "status",
        "priority",
        "origin",
        "owner",
        "category",
        "routing_address",
        "customer",
        "created_at",
        "updated_at",
    ):
        if data[key]:
            click.echo(f"  {key.replace('_', ' ')}: {data[key]}")
    if data["tags"]:
        click.echo(f"  tags: {', '.join(data['tags'])}")
    if data["participants"]:
        people = ", ".join(f"{p['address']} ({p['role']})" for p in data["participants"])
        click.echo(f"  participants: {people}")
    if data["linked_case"]:
        click.echo(f"  linked case: {case_number(data['linked_case'])}")
    for m in data["messages"]:
        click.echo("")
        arrow = "<-" if m["direction"] == "in" else "->"
        click.echo(f"{arrow} message {m['id']} {m['message_id']} via {m['channel']}")
        if m["state"] == "flagged":
            click.echo("   flagged: the sender is not a participant of this case")
        click.echo(
            f"   from: {m['from_name']} <{m['from']}>"
            if m["from_name"]
            else f"   from: {m['from']}"
        )
        click.echo(f"   subject: {m['subject']}")
        if "auth" in m:
            a = m["auth"]
            results = f"spf={a['spf']} dkim={a['dkim']} dmarc={a['dmarc']}"
            click.echo(f"   auth: {results} ({a['source']})")
        body = (m["new_text"] or m["text"]).strip()
        for line in body.splitlines()[:20]:
            click.echo(f"   | {line}")
        for a in m["attachments"]:
            click.echo(
                f"   attachment: {a['filename']} ({a['content_type']}, {a['size']} bytes,"
                f" sha256 {a['sha256'][:16]}...)"
            )
        if m["defects"]:
            click.echo(f"   defects: {len(m['defects'])}")
        click.echo("   why:")
        for d in m["decision_trace"]:
            rest = {k: v for k, v in d.items() if k not in ("stage", "decision")}
            extra = " ".join(f"{k}={v}" for k, v in rest.items() if v not in ("", [], None))
            click.echo(f"     {d['stage']}: {d['decision']} {extra}".rstrip())


def register(group: click.Group) -> None:
    from emaild.cli.case_actions import COMMANDS

    for command in COMMANDS:
        cases_group.add_command(command)
    group.add_command(cases_group)
