"""The webhook tables: subscriptions, events, deliveries (the outbox) and attempts.

Re-exported by ``emaild.store.models``; ``emaild.webhooks`` reads and writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from emaild.store.base import Base
from emaild.store.safetext import SafeString, SafeText


class WebhookSubscription(Base):
    """Where to POST which events: a ``[[webhook]]`` (source "config", synced from the
    file) or one added with the CLI or API (source "database")."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(SafeString(64), unique=True)
    url: Mapped[str] = mapped_column(SafeText())
    # Event types; empty = every type.
    events: Mapped[list[Any]] = mapped_column(default=list)
    # Routing addresses whose events are sent; empty = all.
    addresses: Mapped[list[Any]] = mapped_column(default=list)
    secret: Mapped[str] = mapped_column(SafeString(255))
    source: Mapped[str] = mapped_column(SafeString(16), default="database")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Why it is disabled ("410 Gone from the receiver", "removed from the config").
    disabled_reason: Mapped[str] = mapped_column(SafeText(), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Health: the first failure since the last success; whether channel.failing was raised.
    failing_since: Mapped[datetime | None] = mapped_column(default=None)
    failing_alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    last_success_at: Mapped[datetime | None] = mapped_column(default=None)
    last_failure_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(SafeText(), default="")


class WebhookEvent(Base):
    """One event as sent: the JSON body, built in the transaction of the change."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The ``webhook-id`` header: the same for every attempt and every replay.
    uid: Mapped[str] = mapped_column(SafeString(64), unique=True)
    kind: Mapped[str] = mapped_column(SafeString(32))
    case_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    at: Mapped[datetime]
    # {"type", "timestamp", "data"}
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WebhookDelivery(Base):
    """One event for one subscription: the transactional outbox row."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        # Per case order: "is an earlier delivery of this case still pending?"
        Index(
            "ix_webhook_deliveries_subscription_id_case_id_id", "subscription_id", "case_id", "id"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    # Copied from the event: deliveries of one case (and subscription) go in id order.
    case_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # pending, delivered, failed (given up)
    status: Mapped[str] = mapped_column(SafeString(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    # Retries stop max_retry_age_seconds after this (the event's time; a replay resets it).
    retry_from: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str] = mapped_column(SafeText(), default="")
    # A worker's lease, as for the mail outbox: an expired one is taken over.
    claimed_by: Mapped[str] = mapped_column(SafeString(64), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)


class WebhookAttempt(Base):
    """One POST of a delivery and how it went."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    # The HTTP status, None when no answer came (timeout, refused, closed).
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str] = mapped_column(SafeText(), default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
