"""``emit``: record an operational event in the caller's transaction.

An event is an ``ops_events`` row, a log line, and a webhook delivery to every
subscription that wants it (``emaild.webhooks.publish``), all committed with
the change that caused it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session

from emaild.store.models import OpsEvent
from emaild.webhooks import publish

log = structlog.get_logger("emaild.alerts")


def emit(session: Session, kind: str, data: dict[str, Any], at: datetime) -> None:
    """Record event ``kind`` with ``data`` at ``at``; committed with the caller's change."""
    session.add(OpsEvent(kind=kind, at=at, data=data))
    publish(session, kind, data, at)
    log.warning("ops.event", event_kind=kind, at=at.isoformat(), data=data)
