"""``emaild address add|list|show|enable|disable|remove|verify|confirm|release|test-forwarding``."""

from __future__ import annotations

import sys
from typing import Any

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table
from emaild.config import PRIORITIES

EX_TEST_FAILED = 1


@click.group("address")
def address_group() -> None:
    """Routing addresses: add, verify, test forwarding.

    Addresses declared in the config file ([[address]]) always win over ones
    managed here, and count as verified. Addresses added here start
    unverified: their mail is stored but held (no case, no auto-response)
    until verification, then released into cases in arrival order.
    """


def _routing_options(fn: Any) -> Any:
    """The per-address settings, the same keys as an [[address]] table."""
    options = [
        click.option("--name", default=None, help="Display name (From name of auto-responses)."),
        click.option("--alias", "aliases", multiple=True, help="Another address (repeatable)."),
        click.option("--origin", default=None, help="Default case origin.  [default: Email]"),
        click.option(
            "--priority",
            type=click.Choice(PRIORITIES),
            default=None,
            help="Default case priority.  [default: Medium]",
        ),
        click.option("--owner", default=None, help="Default owner or queue."),
        click.option("--category", default=None, help="Default case category."),
        click.option("--tag", "tags", multiple=True, help="Tag for new cases (repeatable)."),
        click.option(
            "--accept-from",
            "accept_from",
            multiple=True,
            help="Accept mail only from this address or domain (repeatable).",
        ),
        click.option(
            "--reject-action",
            type=click.Choice(["reject", "discard", "quarantine"]),
            default=None,
            help="What happens to mail from others.  [default: reject]",
        ),
        click.option("--auto-response", default=None, help="Template name; '' = none."),
        click.option(
            "--disabled-action",
            type=click.Choice(["tempfail", "reject"]),
            default=None,
            help="What a disabled address answers.  [default: tempfail]",
        ),
        click.option(
            "--closed-case",
            type=click.Choice(["reopen", "reopen_within", "new_linked"]),
            default=None,
            help="A reply to a closed case.  [default: reopen_within]",
        ),
        click.option("--reopen-days", type=int, default=None, help="See --closed-case."),
        click.option(
            "--save-headers/--no-save-headers",
            default=None,
            help="Keep every header of inbound mail.  [default: save]",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@address_group.command("add")
@click.argument("address")
@_routing_options
@click.option("--disabled", is_flag=True, help="Add it disabled (accepts no mail yet).")
@click.option("--json", "as_json", is_flag=True, help="Print the new address as JSON.")
@pass_ctx
def add_cmd(ctx: Context, /, address: str, disabled: bool, as_json: bool, **options: Any) -> None:
    """Add routing address ADDRESS (stored in the database, unverified)."""
    from emaild.addresses import add_managed, validate_routing
    from emaild.verification.admin import address_info, utc_now

    data: dict[str, Any] = {"address": address, "enabled": not disabled}
    for key, value in options.items():
        if value is None or (isinstance(value, tuple) and not value):
            continue
        data[key] = list(value) if isinstance(value, tuple) else value
    routing = validate_routing(data)
    app = ctx.app()
    app.db.run(lambda session: add_managed(session, app.config, routing, utc_now(app)))
    _update_postfix_maps(ctx)
    info = address_info(app, routing.address)
    if as_json:
        echo_json(info)
        return
    click.echo(f"added {routing.address} (unverified: its mail is held until verified)")
    click.echo(f"next: emaild address verify {routing.address}")


@address_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array for scripts.")
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List routing addresses with source, state and held mail."""
    from emaild.verification.admin import list_addresses

    rows = list_addresses(ctx.app())
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["ADDRESS", "SOURCE", "ENABLED", "VERIFIED", "HELD", "NAME / PROBLEM"],
        [
            [
                r["address"],
                r["source"],
                "yes" if r["enabled"] else "no",
                _verified_text(r),
                r["held_messages"],
                r["problem"] or r["name"],
            ]
            for r in rows
        ],
    )


def _verified_text(info: dict[str, Any]) -> str:
    if not info["verified"]:
        return "no"
    return f"yes ({info['verified_via']})" if info["verified_via"] else "yes"


@address_group.command("show")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True, help="The address as JSON.")
@pass_ctx
def show_cmd(ctx: Context, address: str, as_json: bool) -> None:
    """Show ADDRESS: settings, source, verification state, held mail."""
    from emaild.verification.admin import address_info

    info = address_info(ctx.app(), address)
    if as_json:
        echo_json(info)
        return
    click.echo(info["address"] + (f"  ({info['name']})" if info["name"] else ""))
    click.echo(f"  source: {info['source']}" + ("" if info["in_use"] else " (not in use)"))
    if info["problem"]:
        click.echo(f"  problem: {info['problem']}")
    if info.get("shadowed_row"):
        click.echo(f"  note: a managed row for it is ignored ({info['shadowed_row']})")
    click.echo(f"  enabled: {'yes' if info['enabled'] else 'no'}")
    verified = _verified_text(info)
    if info["verified_at"]:
        verified += f" at {info['verified_at']}"
    click.echo(f"  verified: {verified}")
    if info["held_messages"]:
        click.echo(f"  held messages: {info['held_messages']} (released on verification)")
    if info["pending_tokens"] and not info["verified"]:
        click.echo(f"  verification mails sent, not yet back: {info['pending_tokens']}")
    for key, value in info["settings"].items():
        if key in ("address", "name", "enabled") or value in ("", [], None):
            continue
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"  {key.replace('_', ' ')}: {shown}")


@address_group.command("disable")
@click.argument("address")
@pass_ctx
def disable_cmd(ctx: Context, address: str) -> None:
    """Stop accepting mail for ADDRESS (answered as its disabled_action says)."""
    _set_enabled(ctx, address, False)


@address_group.command("enable")
@click.argument("address")
@pass_ctx
def enable_cmd(ctx: Context, address: str) -> None:
    """Accept mail for ADDRESS again."""
    _set_enabled(ctx, address, True)


def _set_enabled(ctx: Context, address: str, enabled: bool) -> None:
    from emaild.addresses import set_enabled

    app = ctx.app()
    row = app.db.run(lambda session: set_enabled(session, app.config, address, enabled))
    click.echo(f"{row.address} {'enabled' if enabled else 'disabled'}")


@address_group.command("remove")
@click.argument("address")
@click.option("--force", is_flag=True, help="Remove it even though mail is held for it.")
@pass_ctx
def remove_cmd(ctx: Context, address: str, force: bool) -> None:
    """Remove managed address ADDRESS (config addresses are removed from the file)."""
    from emaild.verification.admin import remove_address

    removed, held = remove_address(ctx.app(), address, force=force)
    click.echo(f"removed {removed}" + (f"; {held} message(s) stay held" if held else ""))
    _update_postfix_maps(ctx)


def _update_postfix_maps(ctx: Context) -> None:
    """Postfix's maps follow the address book (when postfix.maps_dir is set).

    The address change is already committed; a map that cannot be rewritten
    exits 75 with the reason, so a script notices and reruns `emaild postfix maps`.
    """
    from emaild.cli.postfix import update_maps

    update_maps(ctx)


@address_group.command("verify")
@click.argument("address")
@click.option("--queue-only", is_flag=True, help="Only queue the message; the daemon delivers it.")
@pass_ctx
def verify_cmd(ctx: Context, address: str, queue_only: bool) -> None:
    """Send ADDRESS a verification message with a single-use token.

    The address is verified when that message (or a reply to it) reaches
    emaild through any channel, or with 'emaild address confirm ADDRESS TOKEN'.
    """
    from emaild.verification.admin import address_info, deliver_now, request_verification

    app = ctx.app()
    info = address_info(app, address)
    if info["verified"] and info["source"] == "database":
        click.echo(f"{info['address']} is already verified ({info['verified_via']})")
        return
    request = request_verification(app, address)
    click.echo(
        f"verification message for {request.address} queued (outbox {request.outbox_id}, "
        f"token valid until {request.expires_at:%Y-%m-%d %H:%M} UTC)"
    )
    if queue_only:
        return
    delivery = deliver_now(app, request.outbox_id)
    relay = f"{app.config.relay.host}:{app.config.relay.port}"
    if delivery.status == "sent":
        click.echo(f"sent through the relay {relay}; waiting for it to come back is not needed:")
        click.echo("the address is verified as soon as the message reaches emaild.")
        return
    click.echo(
        f"emaild: the relay {relay} did not take it ({delivery.status}): {delivery.error}",
        err=True,
    )
    if delivery.status == "queued":
        click.echo("emaild: it stays queued and the daemon retries it.", err=True)
    sys.exit(EX_TEST_FAILED)


@address_group.command("confirm")
@click.argument("address")
@click.argument("token")
@pass_ctx
def confirm_cmd(ctx: Context, address: str, token: str) -> None:
    """Verify ADDRESS with TOKEN from its verification message; release held mail."""
    from emaild.verification.admin import confirm

    result = confirm(ctx.app(), address, token)
    click.echo(f"{result.address} verified")
    _print_released(result.released)


@address_group.command("release")
@click.argument("address", required=False)
@pass_ctx
def release_cmd(ctx: Context, address: str | None) -> None:
    """Release held mail of verified addresses (all, or ADDRESS) into cases.

    Normally automatic on verification; this runs what is left, e.g. after a crash.
    """
    released = ctx.app().pipeline.release_held(address)
    _print_released(released)


def _print_released(released: list[Any]) -> None:
    if not released:
        click.echo("no held messages to release")
        return
    for r in released:
        where = f"case {r.case_number}" if r.case_number else r.detail
        click.echo(f"released held message {r.held_row}: {r.outcome} {where}".rstrip())


@address_group.command("test-forwarding")
@click.argument("address")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds to wait for the message to come back.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@pass_ctx
def test_forwarding_cmd(ctx: Context, address: str, timeout: float, as_json: bool) -> None:
    """Send a marked message to ADDRESS through the relay and wait for it to come back.

    Exit 0 when it arrived (path and delay are printed), 1 when it did not (with
    what was checked and the likely causes).
    """
    from emaild.verification.forwarding import run_forwarding_test

    report = run_forwarding_test(ctx.app(), address, timeout=timeout)
    if as_json:
        echo_json(report.as_json())
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        sys.exit(EX_TEST_FAILED)


def register(group: click.Group) -> None:
    group.add_command(address_group)
