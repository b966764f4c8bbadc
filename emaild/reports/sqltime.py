"""Date arithmetic in SQL that differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, func, literal_column
from sqlalchemy.sql.expression import ColumnElement, cast


def seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` in seconds, as a float column."""
    if dialect == "sqlite":
        return cast((func.julianday(end) - func.julianday(start)) * 86400.0, Float)
    return cast(func.date_part("epoch", end - start), Float)


def bucket(dialect: str, ts: Any, unit: str) -> ColumnElement[Any]:
    """The UTC day (``YYYY-MM-DD``), or the Monday of the ISO week, of ``ts``."""
    if dialect == "sqlite":
        if unit == "day":
            return func.strftime("%Y-%m-%d", ts)
        # "weekday 0" moves to the next Sunday (or stays), 6 days back is its Monday.
        return func.date(ts, "weekday 0", "-6 days")
    utc = func.timezone(literal_column("'UTC'"), ts)
    if unit == "day":
        return func.to_char(utc, "YYYY-MM-DD")
    return func.to_char(func.date_trunc("week", utc), "YYYY-MM-DD")
