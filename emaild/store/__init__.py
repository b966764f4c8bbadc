"""Storage: the database (SQLAlchemy), its migrations, and the blob store."""
