"""``emaild run``: the daemon (SMTP/LMTP listeners, scheduler, components)."""

from __future__ import annotations

import os
import sys

import click

from emaild.cli.base import Context, pass_ctx
from emaild.config import config_path_from


@click.command("run")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Override logging.level for this run.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes sharing the listeners (default: daemon.workers, 1). "
    "More than 1 needs PostgreSQL.",
)
@pass_ctx
def run_cmd(ctx: Context, log_level: str | None, workers: int | None) -> None:
    """Run the daemon until SIGTERM (exit 0 after draining); SIGHUP reloads.

    Listens for SMTP on smtp.listen (default 127.0.0.1:2525, env
    EMAILD_SMTP_LISTEN), LMTP on smtp.lmtp_listen (env EMAILD_LMTP_LISTEN) and
    the HTTP API on http.listen (env EMAILD_HTTP_LISTEN), or on the sockets
    systemd passes (socket activation). With --workers N (N > 1) a supervisor
    binds them once and runs N worker processes on them, replacing one that
    dies; SIGTERM and SIGHUP reach every worker.
    """
    if log_level:
        from emaild import logs

        logs.configure(log_level, ctx.config.logging.format)
    count = workers if workers is not None else ctx.config.daemon.workers
    if count > 1:
        from emaild.cli.supervise import supervise

        sys.exit(supervise(ctx, count, log_level))
    from emaild.alerts.component import alerts_component
    from emaild.alerts.selftest import selftest_component
    from emaild.channels.imap.component import imap_component
    from emaild.channels.pipe.listener import handoff_component
    from emaild.daemon import ComponentFactory, Daemon
    from emaild.http.server import http_component, metrics_component
    from emaild.outbox.component import outbox_component
    from emaild.privacy.component import retention_component
    from emaild.sharedsockets import worker_sockets
    from emaild.systemd import listen_fds
    from emaild.verification.release import release_job as verified_release_job
    from emaild.webform.cap import release_job
    from emaild.webhooks.component import webhook_component

    # Taken (and removed from the environment) before anything else can fork:
    # systemd's sockets, or those of the supervisor this process is a worker of.
    sockets = listen_fds(os.environ) or worker_sockets(os.environ)
    if os.environ.get("EMAILD_WORKER"):
        from emaild import logs
        from emaild.supervisor import die_with_supervisor

        die_with_supervisor(os.environ)
        logs.set_process_fields(worker=int(os.environ["EMAILD_WORKER"]), pid=os.getpid())
    app = ctx.app()
    # What runs beside the listeners, in start order (the API last: it may
    # answer only once everything it reports on runs).
    components: tuple[ComponentFactory, ...] = (
        outbox_component,
        webhook_component,
        lambda app: verified_release_job(app.pipeline.release_held),
        imap_component,
        handoff_component,
        release_job,
        retention_component,
        alerts_component,
        selftest_component,
        lambda app: metrics_component(app, sockets),
        lambda app: http_component(app, sockets),
    )
    daemon = Daemon(
        app,
        config_path=config_path_from(ctx.config_path, os.environ),
        sockets=sockets,
        components=components,
    )
    sys.exit(daemon.run())


def register(group: click.Group) -> None:
    group.add_command(run_cmd)
