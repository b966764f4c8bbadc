"""``App``: the configured database, blob store and pipeline, opened once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emaild.config import Config
from emaild.errors import ConfigError
from emaild.observe import metrics
from emaild.pipeline.core import Pipeline
from emaild.services import Services
from emaild.store.blobs import BlobStore, open_blob_store
from emaild.store.database import Database
from emaild.webhooks.subscriptions import sync_config


def sync_webhooks(db: Database, config: Config) -> None:
    """Bring the ``[[webhook]]`` subscriptions into the database (``ConfigError`` on a bad
    secret file). A read when nothing changed."""
    from emaild.clock import utcnow

    with db.session(readonly=True) as session:
        if not sync_config(session, config, utcnow(), apply=False):
            return  # the usual case: no write transaction at every process start
    changes = db.run(lambda session: sync_config(session, config, utcnow()), attempts=3)
    if changes:
        import structlog

        structlog.get_logger("emaild.webhooks").info("webhooks.config_synced", changes=changes)


@dataclass
class App:
    """Everything a command or the daemon needs, passed explicitly (no globals)."""

    config: Config
    db: Database
    blobs: BlobStore
    pipeline: Pipeline

    @property
    def services(self) -> Services:
        """The pipeline's current services (swapped whole on reload)."""
        return self.pipeline.services

    @classmethod
    def open(cls, config: Config, *, migrate: bool = True) -> App:
        """Create the state directory and database on first use; migrate the schema."""
        state = Path(config.state_dir)
        try:
            # Private whatever the umask: mail, customers' addresses and the
            # token secret live here. An existing directory keeps the admin's mode.
            state.mkdir(mode=0o700, parents=True, exist_ok=True)
            config.blob_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create {exc.filename}: {exc.strerror}", key="storage.state_dir"
            ) from None
        if not os.access(state, os.W_OK):
            raise ConfigError(f"{state} is not writable", key="storage.state_dir")
        metrics.set_enabled(config.metrics.enabled)
        db = Database(
            config.database_url,
            busy_timeout=config.storage.busy_timeout_seconds,
            pool_size=max(4, config.limits.workers),
        )
        if migrate:
            try:
                db.migrate()
                sync_webhooks(db, config)
            except BaseException:
                db.dispose()  # a bad secret file, an outage: no pooled connection left open
                raise
        try:
            blobs = open_blob_store(config, db)
        except BaseException:
            db.dispose()
            raise
        pipeline = Pipeline(Services.build(config, db, blobs), db)
        return cls(config=config, db=db, blobs=blobs, pipeline=pipeline)

    def reload(self, config: Config) -> None:
        """Swap in a new config's rules, templates and settings, or raise and keep the old.

        Storage settings (database URL, state and blob directories) need a restart.
        """
        for attr in ("database_url", "state_dir", "blob_dir"):
            if getattr(config, attr) != getattr(self.config, attr):
                raise ConfigError(f"changing {attr} needs a restart", key="storage")
        if (config.storage.blobs, config.storage.s3) != (
            self.config.storage.blobs,
            self.config.storage.s3,
        ):
            raise ConfigError("changing the blob store needs a restart", key="storage.blobs")
        # Raises ConfigError before anything changes; then one assignment swaps it all.
        services = Services.build(config, self.db, self.blobs, clock=self.services.clock)
        sync_webhooks(self.db, config)
        self.config = config
        self.pipeline.services = services
        metrics.set_enabled(config.metrics.enabled)

    def close(self) -> None:
        from emaild.cluster import forget

        forget(self.db)  # cluster-wide locks go before the engine does
        self.blobs.close()
        self.db.dispose()
