"""What ``/metrics`` and ``/readyz`` read from the database, at most once per ``cache_seconds``.

Nothing here runs per message: the queries run when a scrape (or a readiness
probe) asks and the cached figures are older than ``[metrics] cache_seconds``;
concurrent scrapes share one computation. Counts come from indexed columns or
small tables, except the blob bytes, which sum sizes over the message,
attachment and quarantine rows (the bytes the database refers to; the blob
directory itself is never walked).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emaild.store.database import Database
from emaild.store.models import (
    Attachment,
    ChannelStatus,
    Message,
    OutboxItem,
    QuarantineEntry,
    WebhookDelivery,
)


@dataclass(frozen=True)
class ChannelFigures:
    name: str
    kind: str
    last_success: datetime | None
    last_failure: datetime | None
    consecutive_failures: int
    failing_since: datetime | None

    def failing_for(self, now: datetime) -> float:
        """Seconds this channel has been failing (0 when it works)."""
        if not self.consecutive_failures or self.failing_since is None:
            return 0.0
        return max(0.0, (now - self.failing_since).total_seconds())


@dataclass(frozen=True)
class Figures:
    """One reading of the database."""

    taken_at: datetime
    outbox: dict[str, int] = field(default_factory=dict)
    oldest_queued: datetime | None = None
    webhooks: dict[str, int] = field(default_factory=dict)
    oldest_webhook: datetime | None = None
    quarantine_held: dict[str, int] = field(default_factory=dict)
    held_messages: int = 0
    blob_bytes: dict[str, int] = field(default_factory=dict)
    channels: tuple[ChannelFigures, ...] = ()


def read_figures(session: Session, now: datetime) -> Figures:
    """Every database-derived figure, in one read-only session."""
    outbox = {"queued": 0, "sent": 0, "failed": 0}
    for status, n in session.execute(
        select(OutboxItem.status, func.count(OutboxItem.id)).group_by(OutboxItem.status)
    ):
        outbox[str(status)] = int(n)
    oldest = session.scalar(
        select(func.min(OutboxItem.created_at)).where(OutboxItem.status == "queued")
    )
    webhooks = {"pending": 0, "delivered": 0, "failed": 0}
    for status, n in session.execute(
        select(WebhookDelivery.status, func.count(WebhookDelivery.id)).group_by(
            WebhookDelivery.status
        )
    ):
        webhooks[str(status)] = int(n)
    oldest_webhook = session.scalar(
        select(func.min(WebhookDelivery.created_at)).where(WebhookDelivery.status == "pending")
    )
    held_by_reason = {
        str(reason): int(n)
        for reason, n in session.execute(
            select(QuarantineEntry.reason, func.count(QuarantineEntry.id))
            .where(QuarantineEntry.status == "held")
            .group_by(QuarantineEntry.reason)
        )
    }
    held = session.scalar(select(func.count(Message.id)).where(Message.state == "held"))
    raw = session.scalar(select(func.coalesce(func.sum(Message.raw_size), 0)))
    distinct_attachments = (
        select(func.max(Attachment.size).label("size")).group_by(Attachment.sha256).subquery()
    )
    attachments = session.scalar(select(func.coalesce(func.sum(distinct_attachments.c.size), 0)))
    quarantined = session.scalar(
        select(func.coalesce(func.sum(QuarantineEntry.raw_size), 0)).where(
            QuarantineEntry.message_row_id.is_(None)
        )
    )
    channels = tuple(
        ChannelFigures(
            row.name,
            row.kind,
            row.last_success_at,
            row.last_failure_at,
            row.consecutive_failures,
            row.failing_since,
        )
        for row in session.scalars(select(ChannelStatus).order_by(ChannelStatus.name))
    )
    return Figures(
        taken_at=now,
        outbox=outbox,
        oldest_queued=oldest,
        webhooks=webhooks,
        oldest_webhook=oldest_webhook,
        quarantine_held=held_by_reason,
        held_messages=int(held or 0),
        blob_bytes={
            "raw": int(raw or 0),
            "attachments": int(attachments or 0),
            "quarantine": int(quarantined or 0),
        },
        channels=channels,
    )


class FiguresCache:
    """The last reading, renewed when older than ``ttl()`` seconds; one reader at a time."""

    def __init__(self, db: Database, clock: Callable[[], datetime], ttl: Callable[[], float]):
        self.db = db
        self.clock = clock
        self.ttl = ttl
        self._lock = threading.Lock()
        self._figures: Figures | None = None
        self._read_at = 0.0

    def get(self) -> Figures:
        """Cached figures, or fresh ones (raises ``TransientError`` when the database is down)."""
        with self._lock:  # a second scrape waits for the first one's reading
            if self._figures is not None and time.monotonic() - self._read_at < self.ttl():
                return self._figures
            with self.db.session(readonly=True) as session:
                figures = read_figures(session, self.clock())
            self._figures, self._read_at = figures, time.monotonic()
            return figures
