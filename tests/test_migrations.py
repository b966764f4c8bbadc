"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from emaild.store.database import Database, alembic_config, current_revision
from emaild.store.migrations import SCHEMA_HEAD
from emaild.store.models import Base


def test_schema_head_constant_matches_the_scripts(database_url: str) -> None:
    db = Database(database_url)
    try:
        script = ScriptDirectory.from_config(alembic_config(db.engine))
        assert script.get_current_head() == SCHEMA_HEAD
    finally:
        db.dispose()


def test_migrated_database_matches_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        assert current_revision(db.engine) == SCHEMA_HEAD
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
        db.migrate()  # a second start is a no-op
    finally:
        db.dispose()
