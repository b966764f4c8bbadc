"""What an attempt's result means: delivered, retry later, give up, or disable.

- 2xx: delivered.
- 410 Gone: the receiver wants no more; the subscription is disabled (its
  pending deliveries wait, in order, for ``emaild webhook enable``) and this
  delivery stays pending.
- anything else (other status, redirect, timeout, refused, reset): retry after
  ``retry_base_seconds * 2**attempts`` (at most ``retry_max_seconds``), give or
  take ``retry_jitter``; given up once ``max_retry_age_seconds`` have passed since
  the event.

Each attempt is a ``webhook_attempts`` row; the subscription's health
(``failing_since``) is updated with it, and a subscription failing for
``failing_after_seconds`` raises ``channel.failing`` (``channel.recovered`` on
its next success).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from emaild.config import WebhooksConfig
from emaild.store.models import WebhookDelivery, WebhookSubscription
from emaild.webhooks import queue
from emaild.webhooks.outbox import publish
from emaild.webhooks.sender import Result
from emaild.webhooks.subscriptions import disable_gone


def retry_delay(attempts_before: int, settings: WebhooksConfig, rng: random.Random) -> float:
    """Seconds before the next try after ``attempts_before + 1`` failed attempts."""
    growth = float(2 ** min(attempts_before, 40))
    base = min(settings.retry_max_seconds, settings.retry_base_seconds * growth)
    jitter = settings.retry_jitter
    return float(max(0.0, base * (1 + rng.uniform(-jitter, jitter))))


def record(
    session: Session,
    item: queue.Claimed,
    result: Result,
    worker: str,
    now: datetime,
    settings: WebhooksConfig,
    rng: random.Random,
) -> str:
    """Store the attempt and its consequences in one transaction; returns the outcome."""
    if result.ok:
        outcome, delay = queue.DELIVERED, 0.0
    elif result.gone:
        outcome, delay = queue.PENDING, 0.0
    elif now - item.retry_from >= timedelta(seconds=settings.max_retry_age_seconds):
        outcome, delay = queue.FAILED, 0.0
    else:
        outcome, delay = queue.PENDING, retry_delay(item.attempts, settings, rng)
    error = result.error
    if outcome == queue.FAILED:
        error = f"gave up after {item.attempts + 1} attempts: {error}"
    if not queue.record_attempt(
        session,
        item,
        worker,
        now,
        status_code=result.status,
        error=error,
        duration_ms=result.duration_ms,
        outcome=outcome,
        delay=delay,
    ):
        return "lost"  # our claim lapsed and another worker took over
    if result.gone:
        disable_gone(session, item.subscription_id, now, f"410 Gone from {item.url} at {now}")
        outcome = "disabled"
    if result.ok:
        _healthy(session, item, now)
    else:
        _failing(session, item, now, result.error, settings)
    return outcome


def record_many(
    session: Session,
    done: list[tuple[queue.Claimed, Result]],
    worker: str,
    now: datetime,
    settings: WebhooksConfig,
    rng: random.Random,
) -> list[str]:
    """``record`` for several finished attempts in one transaction (one commit).

    Successes, the bulk of the work, are stored set-wise (``queue.record_delivered``)
    and each subscription's health is noted once; failures go one by one. A
    subscription whose last attempt of the batch succeeded is healthy.
    """
    ok = [(item, result) for item, result in done if result.ok and result.status is not None]
    stored = queue.record_delivered(
        session, [(item, int(r.status or 0), r.duration_ms) for item, r in ok], worker, now
    )
    outcomes = []
    last: dict[int, tuple[queue.Claimed, bool]] = {}
    for item, result in done:
        if result.ok:
            outcomes.append(queue.DELIVERED if item.id in stored else "lost")
            if item.id in stored:
                last[item.subscription_id] = (item, True)
        else:
            outcomes.append(record(session, item, result, worker, now, settings, rng))
            last[item.subscription_id] = (item, False)
    for item, succeeded in last.values():
        if succeeded:
            _healthy(session, item, now)
    return outcomes


def _channel(item: queue.Claimed) -> dict[str, Any]:
    return {"channel": f"webhook:{item.subscription}", "kind": "webhook", "url": item.url}


def _healthy(session: Session, item: queue.Claimed, now: datetime) -> None:
    sub = session.get(WebhookSubscription, item.subscription_id)
    if sub is None:
        return
    recent = sub.last_success_at is not None and (now - sub.last_success_at).total_seconds() < 1
    if sub.failing_since is None and recent:
        return  # healthy and noted a moment ago: no write per delivery
    if sub.failing_alerted:
        since = sub.failing_since
        publish(
            session,
            "channel.recovered",
            {**_channel(item), "failing_since": since.isoformat() if since else None},
            now,
        )
    sub.last_success_at, sub.failing_since, sub.failing_alerted = now, None, False


def _failing(
    session: Session, item: queue.Claimed, now: datetime, error: str, settings: WebhooksConfig
) -> None:
    sub = session.get(WebhookSubscription, item.subscription_id)
    if sub is None:
        return
    sub.last_failure_at, sub.last_error = now, error[:2000]
    if sub.failing_since is None:
        sub.failing_since = now
    elapsed = (now - sub.failing_since).total_seconds()
    if not sub.failing_alerted and elapsed >= settings.failing_after_seconds:
        sub.failing_alerted = True
        publish(
            session,
            "channel.failing",
            {
                **_channel(item),
                "failing_since": sub.failing_since.isoformat(),
                "error": error[:500],
            },
            now,
        )


def requeue(
    session: Session, now: datetime, *, ids: list[int] | None = None, since: datetime | None = None
) -> list[int]:
    """Replay: make deliveries (by id, or every one created since ``since``) pending
    and due now, with a fresh retry window. Same ``webhook-id`` as before."""
    query = update(WebhookDelivery).where(
        (WebhookDelivery.claimed_until.is_(None)) | (WebhookDelivery.claimed_until < now)
    )
    if ids is not None:
        query = query.where(WebhookDelivery.id.in_(ids))
    if since is not None:
        query = query.where(WebhookDelivery.created_at >= since)
    result = session.execute(
        query.values(
            status=queue.PENDING, next_attempt_at=now, retry_from=now, claimed_by=""
        ).returning(WebhookDelivery.id)
    )
    return sorted(int(r[0]) for r in result)
