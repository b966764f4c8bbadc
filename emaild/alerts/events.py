"""``emit``: record an operational event in the caller's transaction.

The webhooks of issue 13 deliver events; until they are wired here, an event
is an ``ops_events`` row plus a log line, so tests and operators can see each
one exactly once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session

from emaild.store.models import OpsEvent

log = structlog.get_logger("emaild.alerts")


def emit(session: Session, kind: str, data: dict[str, Any], at: datetime) -> None:
    """Record event ``kind`` with ``data`` at ``at``; committed with the caller's change."""
    session.add(OpsEvent(kind=kind, at=at, data=data))
    log.warning("ops.event", event_kind=kind, at=at.isoformat(), data=data)
