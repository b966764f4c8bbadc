"""``emaild webform html|list|held|release`` (also ``emaild web ...``): Web-to-Case forms."""

from __future__ import annotations

import sys

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table
from emaild.errors import EX_DATAERR, EX_NOINPUT, EX_USAGE


@click.group("webform")
def webform_group() -> None:
    """Web-to-Case forms: the HTML to embed, and submissions held over the daily cap."""


@webform_group.command("html")
@click.argument("name")
@click.option(
    "--base-url",
    default=None,
    help="Where browsers reach emaild (default: web.public_url, else http://<http.listen>).",
)
@pass_ctx
def html_cmd(ctx: Context, name: str, base_url: str | None) -> None:
    """Print the form NAME as an HTML snippet to embed in a page.

    Accessible (labels, autocomplete, required fields), with the honeypot and
    the challenge widget: one external script, no inline code, so the page
    may keep a strict Content-Security-Policy.
    """
    from emaild.webform.page import snippet

    config = ctx.config
    form = next((f for f in config.webform if f.name == name), None)
    if form is None:
        known = ", ".join(f.name for f in config.webform) or "none configured"
        click.echo(f"emaild: no web form named {name!r} (forms: {known})", err=True)
        sys.exit(EX_USAGE)
    if base_url is None:
        base_url = config.web.public_url or (
            f"http://{config.http.listen}" if config.http.listen else ""
        )
    click.echo(snippet(form, base_url), nl=False)


@webform_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="The forms as JSON for scripts.")
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List the forms with today's submissions, their cap and what is held."""
    from emaild.webform.cap import admitted_today, held_entries

    app = ctx.app()
    now = app.pipeline.clock()
    held = held_entries(app.db)
    rows = [
        {
            "name": f.name,
            "address": f.address,
            "enabled": f.enabled,
            "today": admitted_today(app.db, f.name, now),
            "daily_cap": f.daily_cap,
            "held": sum(1 for h in held if h["form"] == f.name),
        }
        for f in app.config.webform
    ]
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["NAME", "ADDRESS", "ENABLED", "TODAY", "CAP", "HELD"],
        [
            [r["name"], r["address"], r["enabled"], r["today"], r["daily_cap"], r["held"]]
            for r in rows
        ],
    )


@webform_group.command("held")
@click.option("--form", "form_name", default=None, help="Only this form's submissions.")
@click.option("--json", "as_json", is_flag=True, help="The entries as JSON for scripts.")
@pass_ctx
def held_cmd(ctx: Context, form_name: str | None, as_json: bool) -> None:
    """Submissions held over a daily cap or waiting for the address to be confirmed."""
    from emaild.webform.cap import held_entries

    rows = held_entries(ctx.app().db, form_name)
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["ID", "FORM", "CREATED", "FROM", "SIZE"],
        [[r["id"], r["form"], r["created_at"], r["envelope_from"], r["raw_size"]] for r in rows],
    )


@webform_group.command("release")
@click.argument("entry_ids", type=int, nargs=-1)
@click.option("--form", "form_name", default=None, help="Only this form's submissions.")
@click.option("--all", "release_all", is_flag=True, help="Every held submission.")
@pass_ctx
def release_cmd(
    ctx: Context, entry_ids: tuple[int, ...], form_name: str | None, release_all: bool
) -> None:
    """Open cases for held submissions now, whatever the cap (they count toward today's)."""
    from emaild.webform.cap import release

    if not entry_ids and not release_all:
        raise click.UsageError("name entry ids or use --all")
    app = ctx.app()
    caps = {f.name: f.daily_cap for f in app.config.webform}
    done = release(
        app.pipeline,
        caps,
        entries=list(entry_ids) if entry_ids else None,
        form=form_name,
        force=True,
    )
    if not done:
        click.echo("emaild: nothing to release", err=True)
        sys.exit(EX_NOINPUT)
    failed = 0
    for item in done:
        where = f" case {item.result.case_number}" if item.result.case_number else ""
        click.echo(f"{item.entry}: {item.result.outcome.value}{where}")
        failed += item.result.outcome.value == "quarantined"
    if failed:
        sys.exit(EX_DATAERR)


def register(group: click.Group) -> None:
    group.add_command(webform_group)
    group.add_command(webform_group, name="web")
