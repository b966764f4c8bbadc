"""``emaild rules test|list``: try the rules on a message without storing anything."""

from __future__ import annotations

import sys
from typing import Any

import click

from emaild.cli.base import Context, pass_ctx, read_input
from emaild.cli.output import echo_json, echo_table
from emaild.errors import EX_DATAERR, EX_NOINPUT, InputError


@click.group("rules")
def rules_group() -> None:
    """The rules in rules/*.toml (or $EMAILD_RULES_DIR)."""


@rules_group.command("test")
@click.argument("file")
@click.option("--address", default="", help="Routing address it was sent to (default: headers).")
@click.option("--from", "mail_from", default="", help="Envelope sender (MAIL FROM).")
@click.option("--channel", default="pipe", show_default=True, help="Channel the rules see.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def test_cmd(
    ctx: Context, file: str, address: str, mail_from: str, channel: str, as_json: bool
) -> None:
    """Show which rules match FILE (.eml, or - for stdin), in order, and the case fields.

    Nothing is stored. The database is not consulted for threading, so a
    message that would thread onto an existing case is shown as a new case.
    """
    from emaild.pipeline import Envelope, Outcome

    try:
        raw = read_input(file)
    except OSError as exc:
        click.echo(f"emaild: cannot read {file}: {exc.strerror}", err=True)
        sys.exit(EX_NOINPUT)
    app = ctx.app()
    if address and app.pipeline.addresses.lookup(address) is None:
        raise click.BadParameter(f"{address} is not a routing address", param_hint="'--address'")
    envelope = Envelope(
        channel=channel,
        mail_from=mail_from,
        rcpt_to=(address,) if address else (),
        routing_hint=address,
    )
    try:
        result = app.pipeline.ingest(raw, envelope, store=False)
    except InputError as exc:
        click.echo(f"emaild: unusable input: {exc}", err=True)
        sys.exit(EX_DATAERR)
    report = summarize(list(result.trace), result.outcome.value)
    if result.outcome is Outcome.QUARANTINED and not report["reason"]:
        report["reason"] = result.detail  # a stage failed: ingesting it would quarantine it
    if as_json:
        echo_json(report)
    else:
        _print_report(report)


def summarize(trace: list[dict[str, Any]], outcome: str) -> dict[str, Any]:
    """The dry run's trace as ``matched`` rule names, the ``case`` fields and the outcome."""
    report: dict[str, Any] = {
        "routing_address": "",
        "classification": [],
        "matched": [],
        "rules": [],
        "case": {},
        "set_by": {},
        "outcome": outcome,
        "reason": "",
        "if_new_case": "",
        "if_new_case_reason": "",
        "auth": {},
        "spam": {},
    }
    for d in trace:
        stage, decision = d.get("stage"), d.get("decision")
        if stage == "route" and decision == "routing address":
            report["routing_address"] = d.get("address", "")
        elif stage == "route" and decision == "routing defaults":
            report["case"] = _fields(d)
        elif stage == "classify":
            report["classification"] = list(d.get("flags", []))
        elif stage == "authenticate" and isinstance(d.get("auth"), dict):
            report["auth"] = {**d["auth"], "authenticated": decision == "authenticated"}
            report["auth"]["why"] = d.get("why", "")
        elif stage == "authenticate" and decision == "quarantined":
            report["outcome"], report["reason"] = decision, d.get("reason", "")
        elif stage == "authenticate" and decision == "spam":
            report["spam"] = {"flag": d.get("flag"), "score": d.get("score")}
        elif stage == "accept" and decision in ("rejected", "dropped", "quarantined"):
            report["outcome"], report["reason"] = decision, d.get("reason", "")
        elif stage == "rules" and decision == "matched":
            report["matched"].append(d["rule"])
            report["rules"].append(
                {k: d.get(k) for k in ("rule", "at", "description", "because", "actions")}
            )
        elif stage == "rules" and decision == "case fields":
            report["case"] = _fields(d)
            report["set_by"] = dict(d.get("set_by", {}))
        elif stage == "rules" and decision in ("dropped", "quarantined"):
            report["outcome"] = decision
            report["reason"] = f"rule {d.get('rule')}: {d.get('reason')}"
        elif stage == "rules" and str(decision).startswith("if new case: "):
            report["if_new_case"] = str(decision).removeprefix("if new case: ")
            report["if_new_case_reason"] = f"rule {d.get('rule')}: {d.get('reason')}"
    return report


def _fields(decision: dict[str, Any]) -> dict[str, Any]:
    keys = ("priority", "origin", "owner", "category", "tags", "auto_response")
    return {k: decision[k] for k in keys if k in decision}


def _print_report(report: dict[str, Any]) -> None:
    click.echo(f"routing address: {report['routing_address']}")
    for flag in report["classification"]:
        click.echo(f"classified: {flag}")
    if report["auth"]:
        a = report["auth"]
        click.echo(
            f"auth: auth.spf={a['spf']} auth.dkim={a['dkim']} auth.dmarc={a['dmarc']}"
            f" auth.source={a['source']} authenticated={'yes' if a['authenticated'] else 'no'}"
            f" ({a['why']})"
        )
    if report["spam"]:
        score = report["spam"]["score"]
        shown = "none" if score is None else score
        click.echo(f"spam: spam.flag={report['spam']['flag']} spam.score={shown}")
    if not report["rules"]:
        click.echo("matched: no rule")
    else:
        click.echo("matched, in order:")
        for i, rule in enumerate(report["rules"], start=1):
            click.echo(f"  {i}. {rule['rule']}  ({rule['at']})")
            click.echo(f"     {rule['description']}")
            for why in rule["because"] or []:
                click.echo(f"     because {why}")
            actions = ", ".join(f"{k}={v!r}" for k, v in (rule["actions"] or {}).items())
            click.echo(f"     actions: {actions}")
    click.echo("case:")
    for key, value in report["case"].items():
        by = report["set_by"].get(key, "")
        click.echo(f"  {key}: {value!r}" + (f"  ({by})" if by else ""))
    outcome = report["outcome"]
    if outcome == "new_case":
        text = "new case, unless it threads onto an existing one"
        if report["if_new_case"]:
            text = (
                f"{report['if_new_case']} unless it threads onto an existing case "
                f"({report['if_new_case_reason']})"
            )
        click.echo(f"outcome: {text}")
    else:
        click.echo(f"outcome: {outcome}: {report['reason']}")


@rules_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rules as JSON.")
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List the loaded rules in evaluation order."""
    from emaild.rules import load_rules

    rules = load_rules(ctx.config.rules_path)
    rows: list[dict[str, Any]] = [
        {
            "name": r.name,
            "at": r.where,
            "description": r.description,
            "conditions": r.condition.text if r.condition else "",
            "actions": r.actions.as_json(),
        }
        for r in rules.rules
    ]
    if as_json:
        echo_json(rows)
        return
    click.echo(f"rules directory: {ctx.config.rules_dir or '(none)'}")
    echo_table(
        ["RULE", "AT", "DESCRIPTION"],
        [[r["name"], r["at"], r["description"][:70]] for r in rows],
    )


def register(group: click.Group) -> None:
    group.add_command(rules_group)
