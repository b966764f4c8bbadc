"""``emaild report``: cases, response times and topics for a period."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table
from emaild.reports import GROUPS

COLUMNS = ["key", "opened", "closed", "answered", "first_response_seconds", "resolution_seconds"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


@click.command("report")
@click.option("--since", help="Start (ISO date or date-time, UTC); default: 7 days before --until.")
@click.option("--until", help="End, exclusive (ISO date or date-time, UTC); default: now.")
@click.option("--by", type=click.Choice(GROUPS), help="Also break the numbers down by this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (stable keys).")
@click.option("--csv", "as_csv", is_flag=True, help="The breakdown (--by, else origin) as CSV.")
@pass_ctx
def report_cmd(
    ctx: Context, since: str | None, until: str | None, by: str | None, as_json: bool, as_csv: bool
) -> None:
    """Cases opened and closed, first response and resolution times, reopen rate,
    auto-responses, quarantined and held mail, and topics with spikes.

    --json prints one object with at least cases_opened, cases_closed and by_origin.
    """
    from emaild.reports.report import build_report, period

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    app = ctx.app()
    start, end = period(since, until, app.pipeline.clock())
    with app.db.session(readonly=True) as session:
        data = build_report(session, start, end, by or ("origin" if as_csv else None))
    if as_json:
        echo_json(data)
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([data["by"], *COLUMNS[1:]])
        for row in data["groups"]:
            writer.writerow([row[c] if row[c] is not None else "" for c in COLUMNS])
    else:
        _text(data)


def _text(data: dict[str, Any]) -> None:
    click.echo(f"period: {data['since']} .. {data['until']}")
    rate = data["reopen_rate"]
    lines = [
        ("cases opened", data["cases_opened"]),
        ("cases closed", data["cases_closed"]),
        ("first response (mean)", _duration(data["first_response_seconds"])),
        ("resolution (mean)", _duration(data["resolution_seconds"])),
        ("reopened", f"{data['reopened']} ({'-' if rate is None else f'{rate:.0%}'})"),
        ("auto-responses sent", data["auto_responses_sent"]),
        ("quarantined", data["quarantined"]),
        ("held", data["held"]),
    ]
    for name, value in lines:
        click.echo(f"{name + ':':24}{value}")
    if data.get("groups") is not None:
        click.echo("")
        echo_table(
            [data["by"].upper(), "OPENED", "CLOSED", "FIRST RESPONSE", "RESOLUTION"],
            [
                [
                    r["key"] or "-",
                    r["opened"],
                    r["closed"],
                    _duration(r["first_response_seconds"]),
                    _duration(r["resolution_seconds"]),
                ]
                for r in data["groups"]
            ],
        )
    if data["topics"]:
        click.echo("")
        echo_table(
            ["TOPIC", "CASES", "USUAL", "SPIKE"],
            [
                [t["topic"], t["cases"], t["usual"], "SPIKE" if t["spike"] else ""]
                for t in data["topics"]
            ],
        )


def register(group: click.Group) -> None:
    group.add_command(report_cmd)
