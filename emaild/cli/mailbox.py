"""``emaild poll`` and ``emaild mailbox``: poll an IMAP mailbox, check one, list them."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy import select

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json, echo_table
from emaild.config import MailboxConfig
from emaild.errors import EX_CONFIG, EX_OK, EX_TEMPFAIL, ConfigError


def resolve_mailbox(ctx: Context, name_or_url: str) -> MailboxConfig:
    """A configured mailbox by name, or one described by an ``imap[s]://`` URL."""
    from emaild.channels.imap.connection import mailbox_from_url

    if "://" in name_or_url:
        return mailbox_from_url(name_or_url, os.environ)
    for box in ctx.config.mailbox:
        if box.name == name_or_url:
            return box
    known = ", ".join(b.name for b in ctx.config.mailbox) or "none configured"
    raise ConfigError(f"no mailbox named {name_or_url!r} (known: {known})", key="mailbox")


@click.command("poll")
@click.option("--once", is_flag=True, help="One pass, then exit (default: keep polling).")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the summary as JSON.")
@click.argument("mailbox")
@pass_ctx
def poll_cmd(ctx: Context, once: bool, as_json: bool, mailbox: str) -> None:
    """Poll MAILBOX (a [[mailbox]] name or imap[s]://USER@HOST:PORT/FOLDER).

    For a URL the password is read from EMAILD_IMAP_PASSWORD. Exit 75 when the
    server or the database is unavailable, 78 when the login is refused or the
    folder is missing.
    """
    from emaild.channels.imap.auth import Credentials
    from emaild.channels.imap.ownership import lock_name
    from emaild.channels.imap.runner import MailboxRunner
    from emaild.channels.imap.worker import MailboxWorker
    from emaild.cluster import cluster_for
    from emaild.errors import TransientError

    box = resolve_mailbox(ctx, mailbox)
    app = ctx.app()
    credentials = Credentials(box)
    # A URL is a one-off: its cursor is kept (the same URL resumes), its health is not.
    configured = "://" not in mailbox
    if not once:
        runner = MailboxRunner(app, box, credentials=credentials, record_health=configured)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: runner.stop())
        runner.run()
        return
    worker = MailboxWorker(app, box, credentials=credentials, record_health=configured)
    with cluster_for(app.db).exclusive(lock_name(box.name)) as mine:
        if not mine:
            raise TransientError(
                f"mailbox {box.name!r} is being polled by another emaild process now"
                " (emaild status lists it); try again later"
            )
        try:
            summary = worker.poll_or_raise()
        finally:
            worker.poller.close()
    if as_json:
        echo_json(summary.as_json())
    else:
        click.echo(
            f"{summary.fetched} fetched: {summary.cases} new cases, {summary.appended} appended, "
            f"{summary.duplicates} duplicates, {summary.quarantined} quarantined"
            + (f" ({summary.too_large} too large)" if summary.too_large else "")
        )


@click.group("mailbox")
def mailbox_group() -> None:
    """IMAP mailboxes: check the connection, list cursors and health."""


@dataclass
class Diagnosis:
    """What ``emaild mailbox test`` found; ``problems`` empty means all is well."""

    mailbox: str
    server: str
    steps: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    folders: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    exit_code: int = EX_OK

    def problem(self, text: str, code: int) -> None:
        self.problems.append(text)
        self.exit_code = self.exit_code or code

    def as_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "server": self.server,
            "ok": not self.problems,
            "steps": self.steps,
            "capabilities": self.capabilities,
            "folders": self.folders,
            "problems": self.problems,
        }


def diagnose(box: MailboxConfig) -> Diagnosis:
    """Connect, log in, look at each folder; every problem in plain words."""
    from imapclient.exceptions import IMAPClientError

    from emaild.channels.imap.auth import Credentials, MailboxProblem
    from emaild.channels.imap.connection import ImapUnavailable, connect, describe

    report = Diagnosis(box.name, describe(box))
    try:
        client = connect(box, Credentials(box))
    except ImapUnavailable as exc:
        report.problem(f"cannot connect: {exc}", EX_TEMPFAIL)
        return report
    except MailboxProblem as exc:
        report.problem(exc.problem, EX_CONFIG)
        return report
    try:
        report.steps.append("connected" + _tls_words(client, box))
        report.steps.append(f"logged in as {box.user} ({box.auth})")
        report.capabilities = sorted(c.decode("ascii", "replace") for c in client.capabilities())
        if box.idle and "IDLE" not in report.capabilities:
            report.steps.append("no IDLE: new mail is found by polling only")
        for folder in box.folders:
            try:
                status = client.folder_status(folder, ["MESSAGES", "UNSEEN", "UIDVALIDITY"])
            except IMAPClientError as exc:
                report.problem(f"folder {folder!r} cannot be opened: {exc}", EX_CONFIG)
                continue
            report.folders[folder] = {k.decode().lower(): int(v) for k, v in status.items()}
        for role, folder in (("move_to", box.move_to), ("failed_folder", box.failed_folder)):
            if folder and not client.folder_exists(folder):
                report.steps.append(
                    f"{role} folder {folder!r} does not exist yet (created on poll)"
                )
    except (OSError, IMAPClientError) as exc:
        report.problem(f"the connection failed: {exc}", EX_TEMPFAIL)
    finally:
        with contextlib.suppress(OSError, IMAPClientError):
            client.logout()
    return report


def _tls_words(client: Any, box: MailboxConfig) -> str:
    if box.tls == "plain":
        return " without TLS (loopback)"
    sock = client.socket()
    version = sock.version() if isinstance(sock, ssl.SSLSocket) else "?"
    return f" with {version}, certificate verified"


@mailbox_group.command("test")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.argument("mailbox")
@pass_ctx
def test_cmd(ctx: Context, as_json: bool, mailbox: str) -> None:
    """Connect to MAILBOX, log in, and show its folders and the server's capabilities."""
    box = resolve_mailbox(ctx, mailbox)
    report = diagnose(box)
    if as_json:
        echo_json(report.as_json())
    else:
        click.echo(f"mailbox {report.mailbox}: {report.server}")
        for step in report.steps:
            click.echo(f"  {step}")
        if report.capabilities:
            click.echo(f"  capabilities: {' '.join(report.capabilities)}")
        for folder, counts in report.folders.items():
            click.echo(
                f"  {folder}: {counts.get('messages', 0)} messages, "
                f"{counts.get('unseen', 0)} unseen, UIDVALIDITY {counts.get('uidvalidity', 0)}"
            )
        for problem in report.problems:
            click.echo(f"  problem: {problem}", err=True)
        click.echo("  ok" if not report.problems else "  FAILED")
    sys.exit(report.exit_code)


@mailbox_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """Configured mailboxes with their cursors and last poll result."""
    from emaild.store.models import ChannelStatus, ImapCursor

    app = ctx.app()
    rows: list[dict[str, Any]] = []
    with app.db.session() as session:
        cursors = list(session.scalars(select(ImapCursor)))
        health = {h.name: h for h in session.scalars(select(ChannelStatus))}
    for box in ctx.config.mailbox:
        status = health.get(f"imap:{box.name}")
        rows.append(
            {
                "name": box.name,
                "enabled": box.enabled,
                "server": f"{box.user}@{box.host}:{box.effective_port}",
                "folders": {
                    c.folder: {
                        "uidvalidity": c.uidvalidity,
                        "last_uid": c.last_uid,
                        "acked_uid": c.acked_uid,
                    }
                    for c in cursors
                    if c.mailbox == box.name
                },
                "last_success_at": status.last_success_at if status else None,
                "last_failure_at": status.last_failure_at if status else None,
                "consecutive_failures": status.consecutive_failures if status else 0,
                "last_error": status.last_error if status else "",
            }
        )
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ["name", "server", "cursor", "last success", "failures", "last error"],
        [
            [
                r["name"] + ("" if r["enabled"] else " (disabled)"),
                r["server"],
                " ".join(f"{f}:{c['last_uid']}" for f, c in r["folders"].items()) or "-",
                r["last_success_at"].isoformat(timespec="seconds") if r["last_success_at"] else "-",
                r["consecutive_failures"],
                r["last_error"][:60] if r["consecutive_failures"] else "",
            ]
            for r in rows
        ],
    )


def register(group: click.Group) -> None:
    group.add_command(poll_cmd)
    group.add_command(mailbox_group)
