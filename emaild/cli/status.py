"""``emaild status``: addresses, channels, outbox, webhooks, quarantine and the holders
of cluster-wide locks on one screen."""

from __future__ import annotations

import sys
from typing import Any

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table

# Nagios-style "warning"; 2 stays click's usage error.
ATTENTION = 1


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="The status as JSON for scripts.")
@click.option(
    "-q", "--quiet", is_flag=True, help="Print only what needs attention (nothing when healthy)."
)
@pass_ctx
def status_cmd(ctx: Context, as_json: bool, quiet: bool) -> None:
    """Routing addresses, channels, outbox and quarantine at a glance.

    Exit 0 healthy, 1 something needs attention (listed under "Attention").
    """
    from emaild.status import gather_status

    data = gather_status(ctx.app())
    if as_json:
        echo_json(data)
    elif quiet:
        for line in data["attention"]:
            click.echo(line)
    else:
        _print(data)
    if data["attention"]:
        sys.exit(ATTENTION)


def _print(data: dict[str, Any]) -> None:
    now = data["generated_at"]
    from emaild.status import age

    click.echo(f"emaild status  config: {data['config']}  database: {data['database']}")
    click.echo("")
    click.echo("Routing addresses")
    echo_table(
        ["  ADDRESS", "SOURCE", "ENABLED", "VERIFIED", "HELD", "PROBLEM"],
        [
            [
                "  " + a["address"],
                a["source"],
                "yes" if a["enabled"] else "no",
                (f"yes ({a['verified_via']})" if a["verified_via"] else "yes")
                if a["verified"]
                else "NO",
                a["held_messages"],
                a["problem"],
            ]
            for a in data["addresses"]
        ],
    )
    click.echo("")
    click.echo("Channels")
    if data["channels"]:
        echo_table(
            ["  NAME", "LAST SUCCESS", "LAST FAILURE", "ERROR"],
            [
                [
                    "  " + c["name"],
                    age(c["last_success_at"], now)
                    if c["reported"]
                    else "no report (daemon not started?)",
                    age(c["last_failure_at"], now)
                    + (
                        f" ({c['consecutive_failures']} in a row)"
                        if c["consecutive_failures"]
                        else ""
                    ),
                    (c["last_error"] or "")[:60],
                ]
                for c in data["channels"]
            ],
        )
    else:
        click.echo("  none configured")
    click.echo("")
    box = data["outbox"]
    line = f"Outbox: {box['queued']} queued, {box['sent']} sent, {box['failed']} failed"
    if box["oldest_queued_at"]:
        line += f"; oldest queued {age(box['oldest_queued_at'], now)}"
    click.echo(line)
    if not data["relay"]["configured"]:
        click.echo(f"  relay: {data['relay']['address']} (the default: no [relay] configured)")
    if box["last_error"] and (box["queued"] or box["failed"]):
        click.echo(f"  last relay error: {box['last_error'][:100]}")
    for w in data["webhooks"]:
        state = "enabled" if w["enabled"] else f"DISABLED ({w['disabled_reason'][:60]})"
        health = f", failing since {age(w['failing_since'], now)}" if w["failing_since"] else ""
        click.echo(
            f"Webhook {w['name']}: {state}{health}; {w['pending']} pending, "
            f"{w['delivered']} delivered, {w['failed']} failed"
        )
    if data["holders"]:
        click.echo("")
        click.echo("Held by (one process at a time, cluster-wide)")
        echo_table(
            ["  NAME", "HOLDER", "SINCE", "HEARTBEAT"],
            [
                [
                    "  " + h["name"],
                    h["holder"] or "nobody (no emaild run polls it now)",
                    age(h["since"], now) if h["holder"] else "",
                    age(h["heartbeat_at"], now) if h["holder"] else "",
                ]
                for h in data["holders"]
            ],
        )
        click.echo("")
    q = data["quarantine"]
    click.echo(
        f"Quarantine: {q['held']} held" + ("  (emaild quarantine list)" if q["held"] else "")
    )
    if data["held_messages"]:
        click.echo(
            f"Held for unverified addresses: {data['held_messages']}"
            "  (emaild address verify ADDRESS)"
        )
    if data["attention"]:
        click.echo("")
        click.echo("Attention")
        for line in data["attention"]:
            click.echo(f"  {line}")


def register(group: click.Group) -> None:
    group.add_command(status_cmd)
