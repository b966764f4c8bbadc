"""Support numbers from the database: ``emaild report`` and ``/api/v1/reports``.

``summary`` counts and times cases with SQL aggregates (the same statements on
SQLite and PostgreSQL; ``sqltime`` hides the two dialects' date arithmetic);
``topics`` groups cases by their subject terms and flags a spike.
"""

# What ``--by`` / ``by=`` may break the numbers down by (here: the CLI loads it cheaply).
GROUPS = ("origin", "priority", "category", "address", "owner", "day", "week")
