"""``emaild blobs migrate --to BACKEND`` and ``emaild blobs verify``: moving the blob store.

Switching ``storage.blobs`` (for example from ``file`` on one host to ``s3``
or ``postgresql`` for several) is: copy with ``migrate --to`` while the daemon
runs, stop it, ``migrate`` again (only what arrived meanwhile is copied), set
``storage.blobs``, start it, ``verify`` (README: Scaling, the blob store).
"""

from __future__ import annotations

import sys

import click

from emaild.cli.base import Context, pass_ctx
from emaild.cli.output import echo_json


@click.group("blobs")
def blobs_group() -> None:
    """The blob store: raw mail and attachments (storage.blobs)."""


@blobs_group.command("migrate")
@click.option(
    "--to",
    "target_kind",
    required=True,
    type=click.Choice(["file", "postgresql", "s3"]),
    help="The backend to copy into (its settings from the config: blob_dir, the "
    "database, [storage.s3]).",
)
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
@pass_ctx
def migrate_cmd(ctx: Context, target_kind: str, as_json: bool) -> None:
    """Copy every blob a row refers to from the configured store to another.

    Each copy is read back and checked by sha256. Resumable: blobs the target
    already holds intact are skipped; one it holds with wrong bytes is replaced.
    Exits 1 if any blob is missing or corrupt in the source, or fails the check.
    """
    from emaild.store.blobs import open_blob_store
    from emaild.store.blobs.copy import CopyReport, copy_blobs

    app = ctx.app()
    if target_kind == app.blobs.kind:
        raise click.UsageError(f"the configured store is {target_kind} already")
    target = open_blob_store(app.config, app.db, backend=target_kind)

    def progress(report: CopyReport) -> None:
        if not as_json:
            click.echo(f"... {report.referenced} blobs checked, {report.copied} copied", err=True)

    try:
        report = copy_blobs(app.db, app.blobs, target, progress)
    finally:
        target.close()
    if as_json:
        echo_json({"from": app.blobs.kind, "to": target_kind, **report.as_json()})
    else:
        click.echo(
            f"{app.blobs.kind} -> {target_kind}: {report.referenced} blobs referenced, "
            f"{report.copied} copied ({report.bytes_copied} bytes), "
            f"{report.already_there} already there"
        )
        for label, shas in (
            ("corrupt in the target, replaced", report.replaced_corrupt),
            ("missing in the source", report.missing_in_source),
            ("corrupt in the source (not copied)", report.corrupt_in_source),
            ("wrong after the copy", report.failed_verify),
        ):
            for sha in shas:
                click.echo(f"{label}: {sha}", err=True)
    if not report.ok:
        sys.exit(1)


@blobs_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object.")
@pass_ctx
def verify_cmd(ctx: Context, as_json: bool) -> None:
    """Read back every blob a row refers to and check its sha256; exit 1 on any problem."""
    from emaild.store.blobs.copy import verify_blobs

    app = ctx.app()
    report = verify_blobs(app.db, app.blobs)
    if as_json:
        echo_json({"store": app.blobs.kind, **report.as_json()})
    else:
        click.echo(
            f"{app.blobs.kind}: {report.referenced} blobs referenced, {report.intact} intact "
            f"({report.bytes} bytes), {len(report.missing)} missing, "
            f"{len(report.corrupt)} corrupt"
        )
        for sha in report.missing:
            click.echo(f"missing: {sha}", err=True)
        for sha in report.corrupt:
            click.echo(f"corrupt: {sha}", err=True)
    if not report.ok:
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(blobs_group)
