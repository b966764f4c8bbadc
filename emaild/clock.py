"""The wall clock, in one place: everything that stamps a time takes a clock it can be handed."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)
