"""Alembic environment: runs on the engine emaild passes in (no alembic.ini URL)."""

from __future__ import annotations

from alembic import context

from emaild.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
