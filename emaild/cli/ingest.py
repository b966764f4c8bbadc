"""``emaild ingest`` (the pipe channel) and ``emaild import`` (bulk)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from emaild.cli.base import Context, pass_ctx, read_input
from emaild.cli.output import echo_json
from emaild.errors import EX_DATAERR, EX_NOINPUT, EX_TEMPFAIL, EmaildError

if TYPE_CHECKING:
    from emaild.app import App


@click.command("ingest")
@click.option("--to", "to", default="", help="Routing address (default: from the headers).")
@click.option("--from", "mail_from", default="", help="Envelope sender, as the MTA saw it.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log every decision to stderr.")
@click.argument("file", default="-")
@pass_ctx
def ingest_cmd(
    ctx: Context, to: str, mail_from: str, as_json: bool, verbose: bool, file: str
) -> None:
    """Store one message from FILE or stdin; print its case number.

    Exit 0 stored; 75 try again later (anything local and fixable: config,
    permissions, storage, an address not configured yet); 65 only for input
    that can never be accepted (empty, not a message, too large).

    When a daemon runs on the same state directory, the message is handed to
    it over STATE_DIR/ingest.sock (same answer, much faster); otherwise, and
    with -v, this process runs the pipeline itself.
    """
    try:
        raw = read_input(file)
    except OSError as exc:
        if file != "-":  # a shell user's mistyped path; an MTA always pipes stdin
            click.echo(f"emaild: cannot read {file}: {exc.strerror}", err=True)
            sys.exit(EX_NOINPUT)
        _defer(f"cannot read stdin: {exc.strerror}")
    if not verbose:  # -v wants this process's log of every decision
        from emaild.channels.pipe.handoff import daemon_socket, hand_off

        path = daemon_socket(ctx.config_path, os.environ)
        handed = hand_off(raw, to=to, mail_from=mail_from, path=path) if path else None
        if handed is not None:
            _finish(handed.exit_code, handed.stdout, handed.stderr, handed.result, as_json)

    from sqlalchemy.exc import SQLAlchemyError  # here: `emaild --help` stays fast

    from emaild.channels.pipe.answer import ingest_pipe, result_json

    try:
        ctx.quiet(verbose)
        app = ctx.app()
    except (EmaildError, OSError, SQLAlchemyError) as exc:
        # An MTA bounces on 78 (pipe(8): "5.3.5 local configuration error"):
        # local trouble is fixable, so the mail stays queued until it is fixed.
        _defer(str(exc))
    try:
        answer = ingest_pipe(app.pipeline, raw, to=to, mail_from=mail_from)
    except (OSError, SQLAlchemyError) as exc:
        _defer(f"{type(exc).__name__}: {exc}")
    spool_counts(app)
    result = None if answer.result is None else result_json(answer.result)
    _finish(answer.exit_code, answer.stdout, answer.stderr, result, as_json)


def _finish(
    code: int, stdout: str, stderr: str, result: dict[str, Any] | None, as_json: bool
) -> NoReturn:
    if as_json and result is not None:
        echo_json(result)
    elif stdout:
        click.echo(stdout)
    if stderr:
        click.echo(stderr, err=True)
    sys.exit(code)


def spool_counts(app: App) -> None:
    """Leave this process's message counts for the daemon's ``/metrics``."""
    from emaild.observe import metrics, spool

    if metrics.enabled():
        spool.add_counts(spool.spool_path(app.config.state_dir), metrics.local_message_counts())


def _defer(why: str) -> NoReturn:
    click.echo(f"emaild: temporary failure, try again: {why}", err=True)
    sys.exit(EX_TEMPFAIL)


@click.command("import")
@click.option("--to", "to", default="", help="Routing address for every message.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log every decision to stderr.")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@pass_ctx
def import_cmd(ctx: Context, to: str, as_json: bool, verbose: bool, path: Path) -> None:
    """Import an mbox file, a Maildir, or a folder of .eml files."""
    from emaild.channels.importer import ImportSummary, count_messages, import_one, iter_messages

    ctx.quiet(verbose)
    app = ctx.app()
    summary = ImportSummary()
    total = count_messages(path)
    show_bar = sys.stderr.isatty() and not as_json
    with click.progressbar(
        length=total or 0, label="importing", file=sys.stderr, hidden=not show_bar
    ) as bar:
        for label, raw in iter_messages(path):
            import_one(app.pipeline, label, raw, summary, to=to)
            bar.update(1)
    spool_counts(app)
    if as_json:
        echo_json(summary.as_json())
    else:
        click.echo(
            f"{summary.cases} new cases, {summary.appended} appended, "
            f"{summary.duplicates} duplicates, {summary.quarantined} quarantined, "
            f"{summary.held} held, {summary.dropped} dropped, {summary.failed} failed"
        )
        for error in summary.errors[:20]:
            click.echo(f"  {error}", err=True)
    if summary.failed:
        sys.exit(
            EX_TEMPFAIL
            if any("temporary" in e or "unavailable" in e for e in summary.errors)
            else EX_DATAERR
        )


def register(group: click.Group) -> None:
    group.add_command(ingest_cmd)
    group.add_command(import_cmd)
