"""What ``emaild webhook`` and ``/api/v1/webhooks`` do, in one place.

Every function takes the database and the config (no ``App``), runs its own
transaction and raises ``InputError`` for a bad request.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.clock import utcnow
from emaild.config import Config
from emaild.errors import InputError
from emaild.store.database import Database
from emaild.store.models import WebhookDelivery, WebhookEvent, WebhookSubscription
from emaild.webhooks import delivery, subscriptions
from emaild.webhooks.payloads import body
from emaild.webhooks.sender import Result, make_client, post

TEST_EVENT = "webhook.test"


def add(
    db: Database,
    config: Config,
    *,
    url: str,
    events: list[str],
    addresses: list[str],
    name: str = "",
    secret: str = "",
) -> dict[str, Any]:
    """Add a run-time subscription; the answer carries the secret (shown once)."""
    new = subscriptions.validate_new(
        url=url,
        events=events,
        addresses=addresses,
        name=name,
        secret=secret,
        allow_private=config.webhooks.allow_private,
    )

    def work(session: Session) -> dict[str, Any]:
        subscriptions.add(session, config, new, utcnow())
        row = subscriptions.get(session, new.name)
        return {**subscriptions.subscription_json(session, row), "secret": new.secret}

    return db.run(work)


def list_all(db: Database) -> list[dict[str, Any]]:
    with db.session(readonly=True) as session:
        return subscriptions.list_all(session)


def show(db: Database, name: str) -> dict[str, Any]:
    with db.session(readonly=True) as session:
        return subscriptions.subscription_json(session, subscriptions.get(session, name))


def remove(db: Database, name: str) -> None:
    db.run(lambda session: subscriptions.remove(session, name))


def set_enabled(db: Database, name: str, enabled: bool) -> None:
    db.run(lambda session: subscriptions.set_enabled(session, name, enabled, utcnow()))


def delivery_json(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "webhook": d.name,
        "event": d.uid,
        "type": d.kind,
        "case": d.case_id,
        "status": d.status,
        "attempts": d.attempts,
        "created_at": d.created_at.isoformat(),
        "next_attempt_at": d.next_attempt_at.isoformat() if d.status == "pending" else None,
        "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None,
        "last_status": d.last_status,
        "last_error": d.last_error,
    }


def deliveries(
    db: Database, *, failed: bool = False, webhook: str = "", limit: int = 100
) -> list[dict[str, Any]]:
    """Deliveries, newest first; ``failed``: given up, or pending after a failed attempt."""
    query = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.case_id,
            WebhookDelivery.status,
            WebhookDelivery.attempts,
            WebhookDelivery.created_at,
            WebhookDelivery.next_attempt_at,
            WebhookDelivery.delivered_at,
            WebhookDelivery.last_status,
            WebhookDelivery.last_error,
            WebhookEvent.uid,
            WebhookEvent.kind,
            WebhookSubscription.name,
        )
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    if failed:
        query = query.where(
            (WebhookDelivery.status == "failed")
            | ((WebhookDelivery.status == "pending") & (WebhookDelivery.last_error != ""))
        )
    if webhook:
        query = query.where(WebhookSubscription.name == webhook)
    with db.session(readonly=True) as session:
        return [delivery_json(d) for d in session.execute(query)]


def replay(
    db: Database, *, ids: list[int] | None = None, since: datetime | None = None
) -> list[int]:
    """Send deliveries again (same ``webhook-id``); returns the ids requeued."""
    if ids is None and since is None:
        raise InputError("name delivery ids or --since")
    return db.run(lambda session: delivery.requeue(session, utcnow(), ids=ids, since=since))


def test(db: Database, config: Config, name: str) -> Result:
    """POST a signed ``webhook.test`` event to subscription ``name`` now (not queued)."""
    with db.session(readonly=True) as session:
        row = subscriptions.get(session, name)
        url, secret, source = row.url, row.secret, row.source
    if source != subscriptions.CONFIG:
        problem = subscriptions.target_problem(url, config.webhooks.allow_private)
        if problem:
            raise InputError(f"url: {problem}")
    now = utcnow()
    payload = body(TEST_EVENT, now, {"webhook": name})
    timeout = config.webhooks.timeout_seconds

    async def send() -> Result:
        async with make_client(timeout) as client:
            return await post(
                client, url, secret, f"msg_test_{int(now.timestamp())}", payload, timeout
            )

    return asyncio.run(send())
