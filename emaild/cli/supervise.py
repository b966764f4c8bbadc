"""``emaild run --workers N`` (N > 1): check, prepare and hand over to the supervisor."""

from __future__ import annotations

import os
from pathlib import Path

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
    from prometheus_client.multiprocess import mark_process_dead

    from emaild.app import App
    from emaild.config import config_path_from
    from emaild.observe.metrics import MULTIPROC_ENV
    from emaild.sharedsockets import bind_listeners, close_all
    from emaild.supervisor import Supervisor, worker_command
    from emaild.systemd import listen_fds

    sockets = bind_listeners(config, listen_fds(os.environ))
    try:
        # Creates the state directory, migrates, checks rules and templates; then
        # lets go of the database: each worker opens its own.
        App.open(config).close()
        shared = _metrics_dir(Path(config.state_dir))
        supervisor = Supervisor(
            count=count,
            sockets=sockets,
            command=worker_command(config_path_from(ctx.config_path, os.environ), log_level),
            shutdown_deadline=config.daemon.shutdown_deadline_seconds,
            worker_env={MULTIPROC_ENV: str(shared)},
            on_exit=lambda pid: mark_process_dead(pid, str(shared)),  # type: ignore[no-untyped-call]
        )
        return supervisor.run()
    finally:
        close_all(sockets)


def _metrics_dir(state_dir: Path) -> Path:
    """The workers' shared metrics directory, emptied: counters start at 0 with the
    supervisor, as they do with a single process."""
    shared = state_dir / "metrics-workers"
    shared.mkdir(mode=0o700, exist_ok=True)
    for stale in shared.glob("*.db"):
        stale.unlink(missing_ok=True)
    return shared
