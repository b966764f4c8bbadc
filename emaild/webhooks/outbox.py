"""The webhook outbox: delivery rows written in the transaction of the change.

``fan_out`` is called by ``emaild.casework.events.record_many`` (the one writer
of ``case_events``), so every case change that writes history also writes its
webhook deliveries, in the same transaction: a change rolled back sends
nothing, a change committed is delivered (by ``emaild.webhooks.component``).
``publish`` does the same for events without a case (quarantine, address
verification, channel health).

One ``webhook_events`` row per event (its body, built here from the current
case and message rows) and one ``webhook_deliveries`` row per subscription that
wants it. Without an enabled subscription this costs one indexed query.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from emaild.store.models import WebhookDelivery, WebhookEvent, WebhookSubscription
from emaild.webhooks.notify import mark
from emaild.webhooks.payloads import Snapshot, body, case_event_data, message_ids, webhook_type

_INSERT_EVENT = insert(WebhookEvent).returning(WebhookEvent.id)
_INSERT_DELIVERY = insert(WebhookDelivery)
_ENABLED = select(
    WebhookSubscription.id, WebhookSubscription.events, WebhookSubscription.addresses
).where(WebhookSubscription.enabled.is_(True))


@dataclass(frozen=True)
class Target:
    """What fan-out needs of an enabled subscription."""

    id: int
    events: frozenset[str]
    addresses: frozenset[str]

    def wants(self, kind: str) -> bool:
        return not self.events or kind in self.events

    def covers(self, addresses: Iterable[str]) -> bool:
        """An event about ``addresses`` (none: not about a routing address) is for us."""
        wanted = {a.lower() for a in addresses if a}
        return not self.addresses or not wanted or bool(self.addresses & wanted)


def targets(session: Session) -> list[Target]:
    return [
        Target(row.id, frozenset(row.events or ()), frozenset(row.addresses or ()))
        for row in session.execute(_ENABLED)
    ]


def fan_out(
    session: Session,
    events: Sequence[tuple[int, str, dict[str, Any]]],
    actor: str,
    at: datetime,
) -> None:
    """Deliveries for ``case_events`` rows just written (same arguments as ``record_many``).

    Field changes of one case in one call become one ``case.updated``.
    """
    subs = targets(session)
    if not subs:
        return
    grouped: list[tuple[int, str, list[dict[str, Any]]]] = []
    for case_id, kind, data in events:
        wtype = webhook_type(kind)
        if wtype is None or not any(s.wants(wtype) for s in subs):
            continue
        last = grouped[-1] if grouped else None
        if wtype == "case.updated" and last and last[:2] == (case_id, wtype):
            last[2].append(data)
            continue
        grouped.append((case_id, wtype, [data]))
    if not grouped:
        return
    mentioned = message_ids((c, k, items[0]) for c, k, items in grouped)
    snapshot = Snapshot(session, [c for c, _, _ in grouped], mentioned)
    for case_id, wtype, items in grouped:
        routing = snapshot.routing_address(case_id)
        chosen = [s for s in subs if s.wants(wtype) and s.covers((routing,))]
        if chosen:
            data = case_event_data(snapshot, case_id, wtype, actor, items)
            write(session, wtype, data, at, case_id, chosen)


def publish(
    session: Session,
    kind: str,
    data: dict[str, Any],
    at: datetime,
    case_id: int | None = None,
    *,
    addresses: Iterable[str] = (),
) -> None:
    """An event without a ``case_events`` row (quarantine.added, address.verified,
    channel.failing, channel.recovered), in the caller's transaction.

    ``addresses``: the routing addresses it concerns, for subscriptions limited to
    some (none: every subscription that wants ``kind``).
    """
    wanted = list(addresses)
    chosen = [s for s in targets(session) if s.wants(kind) and s.covers(wanted)]
    if chosen:
        write(session, kind, data, at, case_id, chosen)


def write(
    session: Session,
    kind: str,
    data: dict[str, Any],
    at: datetime,
    case_id: int | None,
    subs: Sequence[Target],
) -> int:
    """One event row and its deliveries; returns the event's id."""
    conn = session.connection()
    event_id = int(
        conn.execute(
            _INSERT_EVENT,
            {
                "uid": f"msg_{uuid.uuid4().hex}",
                "kind": kind,
                "case_id": case_id,
                "at": at,
                "body": body(kind, at, data),
            },
        ).scalar_one()
    )
    conn.execute(
        _INSERT_DELIVERY,
        [
            {
                "event_id": event_id,
                "subscription_id": s.id,
                "case_id": case_id,
                "status": "pending",
                "attempts": 0,
                "created_at": at,
                "retry_from": at,
                "next_attempt_at": at,
                "last_error": "",
                "claimed_by": "",
            }
            for s in subs
        ],
    )
    mark(session)
    return event_id
