"""``App``: the configured database, blob store and pipeline, opened once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emaild.addresses import AddressBook
from emaild.config import Config
from emaild.errors import ConfigError
from emaild.pipeline.core import Pipeline
from emaild.services import build_services
from emaild.store.blobs import BlobStore
from emaild.store.database import Database


@dataclass
class App:
    """Everything a command or the daemon needs, passed explicitly (no globals)."""

    config: Config
    db: Database
    blobs: BlobStore
    pipeline: Pipeline
    services: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, config: Config, *, migrate: bool = True) -> App:
        """Create the state directory and database on first use; migrate the schema."""
        state = Path(config.state_dir)
        try:
            state.mkdir(parents=True, exist_ok=True)
            config.blob_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create {exc.filename}: {exc.strerror}", key="storage.state_dir"
            ) from None
        if not os.access(state, os.W_OK):
            raise ConfigError(f"{state} is not writable", key="storage.state_dir")
        db = Database(
            config.database_url,
            busy_timeout=config.storage.busy_timeout_seconds,
            pool_size=max(4, config.limits.workers),
        )
        if migrate:
            db.migrate()
        blobs = BlobStore(config.blob_dir)
        services = build_services(config)
        services["addresses"] = AddressBook(config, db)
        pipeline = Pipeline(config, db, blobs, services=services)
        return cls(config=config, db=db, blobs=blobs, pipeline=pipeline, services=services)

    def reload(self, config: Config) -> None:
        """Swap in a new config's rules, templates and settings, or raise and keep the old.

        Storage settings (database URL, state and blob directories) need a restart.
        """
        services = build_services(config)  # raises ConfigError: nothing changes
        services["addresses"] = AddressBook(config, self.db)
        for attr in ("database_url", "state_dir", "blob_dir"):
            if getattr(config, attr) != getattr(self.config, attr):
                raise ConfigError(f"changing {attr} needs a restart", key="storage")
        self.config = config
        self.services = services
        self.pipeline.config = config
        self.pipeline.services = services

    def close(self) -> None:
        self.db.dispose()
