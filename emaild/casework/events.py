"""``case_events`` rows: who did what to a case, and when (and the webhooks that tell)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from emaild.store.models import CaseEvent
from emaild.webhooks.outbox import fan_out

# The pipeline's actor: a change that came in by mail.
MAIL = "mail"
CLI = "cli"

_INSERT = insert(CaseEvent)


def record(
    session: Session, case_id: int, kind: str, actor: str, at: datetime, **data: Any
) -> None:
    """Write one event row in the caller's transaction (one Core INSERT)."""
    record_many(session, [(case_id, kind, data)], actor, at)


def record_many(
    session: Session, events: list[tuple[int, str, dict[str, Any]]], actor: str, at: datetime
) -> None:
    """Several events of one change in one executemany, and their webhook deliveries
    (``emaild.webhooks.outbox``) in the same transaction: the one place both are written."""
    rows = [
        {"case_id": case_id, "kind": kind, "actor": actor, "at": at, "data": data}
        for case_id, kind, data in events
    ]
    if rows:
        session.connection().execute(_INSERT, rows)
        fan_out(session, events, actor, at)


def event_json(e: CaseEvent) -> dict[str, Any]:
    return {"id": e.id, "kind": e.kind, "actor": e.actor, "at": e.at.isoformat(), "data": e.data}


def list_events(
    session: Session, case_id: int, *, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """Events of case ``case_id`` with ids above ``after``, oldest first."""
    query = (
        select(CaseEvent)
        .where(CaseEvent.case_id == bindparam("case_id"), CaseEvent.id > after)
        .order_by(CaseEvent.id)
        .limit(limit)
    )
    return [event_json(e) for e in session.scalars(query, {"case_id": case_id})]
