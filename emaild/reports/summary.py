"""Cases opened and closed, response and resolution times, machine counts.

Definitions (a period is ``since <= t < until``, UTC):

- opened: cases created in the period; closed: cases whose ``closed_at`` (the
  last close; a reopened case has none) is in the period;
- first response: from a case's creation to its first agent reply (an
  outbound message that is not an auto-response), for cases opened in the
  period that have one; resolution: from creation to ``closed_at``, for the
  cases closed in the period;
- reopened: cases with a status change away from ``closed`` in the period;
  reopen rate: reopened / closed (None when nothing closed);
- auto-responses: outbox items of kind ``autoresponse`` sent in the period;
  quarantined: quarantine entries made in the period; held: messages received
  in the period and still held.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from emaild.reports.sqltime import bucket, seconds_between
from emaild.store.models import Case, CaseEvent, Message, OutboxItem, QuarantineEntry

_COLUMNS = {
    "origin": Case.origin,
    "priority": Case.priority,
    "category": Case.category,
    "address": Case.routing_address,
    "owner": Case.owner,
}


def _key(dialect: str, by: str, ts: Any) -> Any:
    return bucket(dialect, ts, by) if by in ("day", "week") else _COLUMNS[by]


def _first_replies(opened_in: Any) -> Any:
    """Per case opened in the period: the time of its first agent reply."""
    opened = select(Case.id).where(opened_in)
    return (
        select(Message.case_id.label("case_id"), func.min(Message.received_at).label("at"))
        .where(
            Message.case_id.in_(opened),
            Message.direction == "out",
            Message.is_auto.is_(False),
        )
        .group_by(Message.case_id)
        .subquery()
    )


def _avg(value: Any) -> float | None:
    return round(float(value), 3) if value is not None else None


def grouped(session: Session, since: datetime, until: datetime, by: str) -> list[dict[str, Any]]:
    """One row per value of ``by``: opened, closed, mean first response and resolution."""
    dialect = session.get_bind().dialect.name
    opened_in = and_(Case.created_at >= since, Case.created_at < until)
    closed_in = and_(Case.closed_at >= since, Case.closed_at < until)
    rows: dict[str, dict[str, Any]] = {}

    def row(key: Any) -> dict[str, Any]:
        name = "" if key is None else str(key)
        return rows.setdefault(
            name,
            {
                "key": name,
                "opened": 0,
                "closed": 0,
                "answered": 0,
                "first_response_seconds": None,
                "resolution_seconds": None,
            },
        )

    key = _key(dialect, by, Case.created_at).label("k")
    for k, n in session.execute(select(key, func.count()).where(opened_in).group_by(key)):
        row(k)["opened"] = int(n)
    first = _first_replies(opened_in)
    wait = seconds_between(dialect, Case.created_at, first.c.at)
    query = (
        select(key, func.count(), func.avg(wait))
        .join(first, first.c.case_id == Case.id)
        .where(opened_in)
        .group_by(key)
    )
    for k, n, mean in session.execute(query):
        row(k).update(answered=int(n), first_response_seconds=_avg(mean))
    key = _key(dialect, by, Case.closed_at).label("k")
    took = seconds_between(dialect, Case.created_at, Case.closed_at)
    query = select(key, func.count(), func.avg(took)).where(closed_in).group_by(key)
    for k, n, mean in session.execute(query):
        row(k).update(closed=int(n), resolution_seconds=_avg(mean))
    return [rows[k] for k in sorted(rows)]


def summary(
    session: Session, since: datetime, until: datetime, by: str | None = None
) -> dict[str, Any]:
    """The report as one JSON-ready object (``emaild report --json``)."""
    totals = grouped_total = grouped(session, since, until, "origin")
    opened = sum(r["opened"] for r in totals)
    closed = sum(r["closed"] for r in totals)
    answered = sum(r["answered"] for r in totals)

    def weighted(field: str, weight: str) -> float | None:
        parts = [(r[field], r[weight]) for r in totals if r[field] is not None]
        count = sum(n for _, n in parts)
        return round(sum(v * n for v, n in parts) / count, 3) if count else None

    reopened = session.scalar(
        select(func.count(func.distinct(CaseEvent.case_id))).where(
            CaseEvent.kind == "case.status",
            CaseEvent.data["from"].as_string() == "closed",
            CaseEvent.at >= since,
            CaseEvent.at < until,
        )
    )
    auto = session.scalar(
        select(func.count()).where(
            OutboxItem.kind == "autoresponse",
            OutboxItem.status == "sent",
            OutboxItem.sent_at >= since,
            OutboxItem.sent_at < until,
        )
    )
    quarantined = session.scalar(
        select(func.count()).where(
            QuarantineEntry.created_at >= since, QuarantineEntry.created_at < until
        )
    )
    held = session.scalar(
        select(func.count()).where(
            Message.state == "held", Message.received_at >= since, Message.received_at < until
        )
    )
    report: dict[str, Any] = {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "cases_opened": opened,
        "cases_closed": closed,
        "cases_answered": answered,
        "first_response_seconds": weighted("first_response_seconds", "answered"),
        "resolution_seconds": weighted("resolution_seconds", "closed"),
        "reopened": int(reopened or 0),
        "reopen_rate": round(int(reopened or 0) / closed, 4) if closed else None,
        "auto_responses_sent": int(auto or 0),
        "quarantined": int(quarantined or 0),
        "held": int(held or 0),
        "by_origin": {
            r["key"]: {"opened": r["opened"], "closed": r["closed"]} for r in grouped_total
        },
    }
    if by is not None:
        report["by"] = by
        report["groups"] = grouped(session, since, until, by)
    return report
