"""Alembic migrations. ``SCHEMA_HEAD`` lets startup skip Alembic when current."""

SCHEMA_HEAD = "0008"
