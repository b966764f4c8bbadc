"""A bounce of a message we sent marks its recipient undeliverable.

Only a bounce that carries the Message-ID of an outbox item we actually sent
counts (our Message-IDs are signed and random, so nobody can suppress an
address by forging a bounce for mail we never sent), and only a failure:
"delayed" warnings and success notices change nothing. The recipient of that
item goes into ``suppressed_recipients`` and gets no further auto-responses.
"""

from __future__ import annotations

import email
from email.message import Message
from email.policy import compat32
from typing import TYPE_CHECKING

from sqlalchemy import select

from emaild.correlation.bounce import SCAN_BYTES, embedded_message_ids
from emaild.outbox.queue import SENT, suppress
from emaild.store.models import OutboxItem

if TYPE_CHECKING:
    from emaild.pipeline.context import IngestContext

STAGE = "autorespond"
_NOT_FAILURES = {"delayed", "delivered", "relayed", "expanded"}


def record_bounce(ctx: IngestContext) -> list[str]:
    """Suppress the recipients of our messages this bounce reports as failed; returns them."""
    cls = ctx.classification
    if cls is None or not cls.is_bounce or ctx.session is None or ctx.parsed is None:
        return []
    ids = embedded_message_ids(ctx.raw)
    if not ids:
        return []
    ours = list(
        ctx.session.scalars(
            select(OutboxItem).where(OutboxItem.message_id.in_(ids), OutboxItem.status == SENT)
        )
    )
    if not ours:
        return []
    actions = dsn_actions(ctx.raw)
    if actions and actions <= _NOT_FAILURES:
        ctx.decide(STAGE, "bounce is not a failure", actions=sorted(actions))
        return []
    suppressed = []
    for item in ours:
        reason = f"bounce {ctx.parsed.message_id or '(no Message-ID)'} of {item.message_id}"
        suppress(ctx.session, item.rcpt_to, reason, ctx.now)
        suppressed.append(item.rcpt_to)
    ctx.decide(STAGE, "recipient marked undeliverable", addresses=suppressed, outbox=ours[0].id)
    return suppressed


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
