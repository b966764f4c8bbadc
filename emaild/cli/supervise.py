"""``emaild run --workers N`` (N > 1): check, prepare and hand over to the supervisor."""

from __future__ import annotations

import os

from emaild.cli.base import Context
from emaild.errors import ConfigError


def supervise(ctx: Context, count: int, log_level: str | None) -> int:
    """Run ``count`` workers under ``emaild.supervisor``; the process exit status.

    Refused on SQLite (exit 78): it allows one writer process. The schema is
    migrated here, once, before any worker starts, and the listeners are bound
    here, so a port in use is one clear error, not N crashing workers.
    """
    config = ctx.config
    if config.database_url.startswith("sqlite"):
        raise ConfigError(
            f"{count} workers need PostgreSQL: SQLite allows one writer process "
            "(set storage.database_url to PostgreSQL, or use --workers 1)",
            key="daemon.workers",
        )
    from emaild.app import App
    from emaild.config import config_path_from
    from emaild.sharedsockets import bind_listeners, close_all
    from emaild.supervisor import Supervisor, worker_command
    from emaild.systemd import listen_fds

    sockets = bind_listeners(config, listen_fds(os.environ))
    try:
        # Creates the state directory, migrates, checks rules and templates; then
        # lets go of the database: each worker opens its own.
        App.open(config).close()
        supervisor = Supervisor(
            count=count,
            sockets=sockets,
            command=worker_command(config_path_from(ctx.config_path, os.environ), log_level),
            shutdown_deadline=config.daemon.shutdown_deadline_seconds,
        )
        return supervisor.run()
    finally:
        close_all(sockets)
