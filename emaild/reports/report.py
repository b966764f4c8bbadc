"""The whole report for a period: what the CLI and the API both answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from emaild.errors import InputError
from emaild.reports import GROUPS
from emaild.reports.summary import summary
from emaild.reports.topics import topics

DEFAULT_DAYS = 7
MAX_SPAN = timedelta(days=3660)


def parse_time(value: str, name: str) -> datetime:
    """An ISO date (``2026-11-01``: midnight UTC) or date-time (UTC when no zone given)."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError(f"{name}: not an ISO date or date-time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def period(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """``[since, until)``: by default the last ``DEFAULT_DAYS`` days up to ``now``."""
    end = parse_time(until, "until") if until else now
    start = parse_time(since, "since") if since else end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise InputError("since: must be before until")
    if end - start > MAX_SPAN:
        raise InputError(f"since: a period of at most {MAX_SPAN.days} days")
    return start, end


def build_report(
    session: Session, since: datetime, until: datetime, by: str | None = None
) -> dict[str, Any]:
    """``summary`` plus the ``topics`` view."""
    if by is not None and by not in GROUPS:
        raise InputError(f"by: one of {', '.join(GROUPS)}")
    report = summary(session, since, until, by)
    report["topics"] = topics(session, since, until)
    return report
