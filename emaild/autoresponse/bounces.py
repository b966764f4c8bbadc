"""A bounce of a message we sent marks its recipient undeliverable.

Only a bounce that carries the Message-ID of an outbox item we actually sent
counts (our Message-IDs are signed and random, so nobody can suppress an
address by forging a bounce for mail we never sent), and only a failure:
"delayed" warnings and success notices change nothing. The recipient of that
item goes into ``suppressed_recipients`` and gets no further auto-responses.
"""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.policy import compat32

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.correlation.bounce import SCAN_BYTES, embedded_message_ids
from emaild.outbox.queue import SENT, suppress
from emaild.store.models import OutboxItem

_NOT_FAILURES = {"delayed", "delivered", "relayed", "expanded"}


@dataclass(frozen=True)
class BounceEffect:
    """What a bounce of our mail changed: the recipients now suppressed, or why none."""

    suppressed: tuple[str, ...] = ()
    outbox_id: int | None = None
    # The report's actions when none of them is a failure (delayed, delivered...).
    not_failures: tuple[str, ...] = ()


def record_bounce(
    session: Session, raw: bytes, *, bounce_message_id: str, now: datetime
) -> BounceEffect:
    """Suppress the recipients of our messages this bounce reports as failed."""
    ids = embedded_message_ids(raw)
    if not ids:
        return BounceEffect()
    ours = list(
        session.scalars(
            select(OutboxItem).where(OutboxItem.message_id.in_(ids), OutboxItem.status == SENT)
        )
    )
    if not ours:
        return BounceEffect()
    actions = dsn_actions(raw)
    if actions and actions <= _NOT_FAILURES:
        return BounceEffect(not_failures=tuple(sorted(actions)))
    suppressed = []
    for item in ours:
        reason = f"bounce {bounce_message_id or '(no Message-ID)'} of {item.message_id}"
        suppress(session, item.rcpt_to, reason, now)
        suppressed.append(item.rcpt_to)
    return BounceEffect(suppressed=tuple(suppressed), outbox_id=ours[0].id)


def dsn_actions(raw: bytes) -> set[str]:
    """The ``Action:`` values of an RFC 3464 report (empty if it has none)."""
    message = email.message_from_bytes(raw[:SCAN_BYTES], policy=compat32)
    actions: set[str] = set()
    for part in message.walk():
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        payload = part.get_payload()
        blocks = [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []
        for block in blocks:
            value = str(block.get("action", "")).strip().lower()
            if value:
                actions.add(value.split()[0])
        if not blocks and isinstance(payload, str):
            for line in payload.splitlines():
                key, _, value = line.partition(":")
                if key.strip().lower() == "action" and value.strip():
                    actions.add(value.strip().lower().split()[0])
    return actions
