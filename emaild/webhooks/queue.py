"""Deliveries as a queue: claim due ones in case order, record each attempt's outcome.

A delivery is due when it is pending, its time has come, nobody holds a live
claim on it, its subscription is enabled, and no earlier delivery of the same
case to the same subscription is still pending (per-case order: a later event
waits for an earlier one; other cases do not wait). Claims are leases, as in
the mail outbox: a worker that dies leaves a claim that lapses (or is released
at once by the next daemon on the same host, see ``release_dead``). On
PostgreSQL the claim reads with ``FOR UPDATE SKIP LOCKED``, so several emaild
processes share the work without waiting on each other; on SQLite the single
writer lock serialises claims.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from emaild.store.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"

_Earlier = aliased(WebhookDelivery)


def worker_name() -> str:
    """Who holds a claim: host, process and a random part."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds, with everything needed to POST it."""

    id: int
    event_uid: str
    body: dict[str, Any]
    subscription_id: int
    subscription: str
    url: str
    secret: str
    source: str
    attempts: int
    retry_from: datetime


def _due(now: datetime) -> Any:
    earlier_pending = exists().where(
        _Earlier.subscription_id == WebhookDelivery.subscription_id,
        _Earlier.case_id == WebhookDelivery.case_id,
        _Earlier.status == PENDING,
        _Earlier.id < WebhookDelivery.id,
    )
    return and_(
        WebhookDelivery.status == PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
        WebhookSubscription.enabled.is_(True),
        ~earlier_pending,
    )


def any_due(session: Session, now: datetime) -> bool:
    """A cheap read-only look: is there anything to claim?"""
    query = (
        select(WebhookDelivery.id)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(_due(now))
        .limit(1)
    )
    return session.scalar(query) is not None


def claim_due(
    session: Session, worker: str, now: datetime, lease: float, limit: int
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries (oldest first) for ``worker``."""
    query = (
        select(WebhookDelivery.id)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(_due(now))
        .order_by(WebhookDelivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
    ids = list(session.scalars(query))
    if not ids:
        return []
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(claimed_by=worker, claimed_until=now + timedelta(seconds=lease))
    )
    rows = session.execute(
        select(
            WebhookDelivery.id,
            WebhookDelivery.attempts,
            WebhookDelivery.retry_from,
            WebhookDelivery.subscription_id,
            WebhookEvent.uid,
            WebhookEvent.body,
            WebhookSubscription.name,
            WebhookSubscription.url,
            WebhookSubscription.secret,
            WebhookSubscription.source,
        )
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(WebhookDelivery.id.in_(ids))
        .order_by(WebhookDelivery.id)
    )
    return [
        Claimed(
            id=r.id,
            event_uid=r.uid,
            body=r.body,
            subscription_id=r.subscription_id,
            subscription=r.name,
            url=r.url,
            secret=r.secret,
            source=r.source,
            attempts=r.attempts,
            retry_from=r.retry_from,
        )
        for r in rows
    ]


def release_dead(session: Session, now: datetime) -> int:
    """Release claims of this host's workers whose process is gone (a crash, a kill)."""
    host = socket.gethostname()[:32]
    rows = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.claimed_by).where(
            WebhookDelivery.status == PENDING,
            WebhookDelivery.claimed_until >= now,
            WebhookDelivery.claimed_by.like(f"{host}:%"),
        )
    ).all()
    dead = [r.id for r in rows if not _alive(r.claimed_by)]
    if dead:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(dead))
            .values(claimed_by="", claimed_until=None)
        )
    return len(dead)


def _alive(worker: str) -> bool:
    parts = worker.split(":")
    if len(parts) < 3 or not parts[1].isdigit():
        return True  # not ours to judge
    pid = int(parts[1])
    if pid == os.getpid():
        return True  # this process (another component instance): its claims are live
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mine(delivery_id: int, worker: str) -> Any:
    return and_(
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.status == PENDING,
        WebhookDelivery.claimed_by == worker,
    )


def record_attempt(
    session: Session,
    item: Claimed,
    worker: str,
    now: datetime,
    *,
    status_code: int | None,
    error: str,
    duration_ms: int,
    outcome: str,
    delay: float = 0.0,
) -> bool:
    """Store one attempt and the delivery's new state; False if the claim was lost.

    ``outcome``: DELIVERED, FAILED (given up) or PENDING (retry after ``delay``).
    """
    values: dict[str, Any] = {
        "attempts": WebhookDelivery.attempts + 1,
        "last_status": status_code,
        "last_error": error[:2000],
        "claimed_by": "",
        "claimed_until": None,
        "status": outcome,
    }
    if outcome == DELIVERED:
        values["delivered_at"] = now
    elif outcome == PENDING:
        values["next_attempt_at"] = now + timedelta(seconds=delay)
    result: Any = session.execute(
        update(WebhookDelivery).where(_mine(item.id, worker)).values(**values)
    )
    if result.rowcount != 1:
        return False
    session.add(
        WebhookAttempt(
            delivery_id=item.id,
            at=now,
            status_code=status_code,
            error=error[:2000],
            duration_ms=duration_ms,
        )
    )
    return True


def record_delivered(
    session: Session, done: list[tuple[Claimed, int, int]], worker: str, now: datetime
) -> set[int]:
    """Store many successful attempts at once: ``(item, status_code, duration_ms)``.

    One UPDATE per status code (the claim must still be ours) and one INSERT of
    the attempt rows; returns the ids stored (the others' claims were lost).
    """
    by_code: dict[int, list[int]] = {}
    for item, code, _ in done:
        by_code.setdefault(code, []).append(item.id)
    stored: set[int] = set()
    for code, ids in by_code.items():
        result = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id.in_(ids),
                WebhookDelivery.status == PENDING,
                WebhookDelivery.claimed_by == worker,
            )
            .values(
                attempts=WebhookDelivery.attempts + 1,
                last_status=code,
                last_error="",
                claimed_by="",
                claimed_until=None,
                status=DELIVERED,
                delivered_at=now,
            )
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        )
        stored.update(int(row[0]) for row in result)
    rows = [
        {"delivery_id": item.id, "at": now, "status_code": code, "error": "", "duration_ms": ms}
        for item, code, ms in done
        if item.id in stored
    ]
    if rows:
        session.execute(insert(WebhookAttempt), rows)
    return stored


def give_back(session: Session, delivery_id: int, worker: str) -> None:
    """Release a claim untouched (shutdown before the attempt)."""
    session.execute(
        update(WebhookDelivery)
        .where(_mine(delivery_id, worker))
        .values(claimed_by="", claimed_until=None)
    )
