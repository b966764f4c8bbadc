"""The outbox table as a queue: enqueue in the caller's transaction, claim, record.

An item is ``queued`` until it is ``sent`` or ``failed``. A delivery worker
claims a queued item by writing its name and a lease (``claimed_by``,
``claimed_until``) with a compare-and-set UPDATE committed before it talks to
the relay, so two processes never send the same item; the claim lapses if the
worker dies, and a later run takes the item over. Nothing here holds a
database transaction open while the network is in use.
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from emaild.store.models import OutboxItem, SuppressedRecipient
from emaild.store.rows import insert_row

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"
STATUSES = (QUEUED, SENT, FAILED)

# Raw bytes exactly as they go on the wire: CRLF line ends, folded headers.
WIRE_POLICY = email.policy.SMTP


def enqueue(
    session: Session,
    message: EmailMessage | bytes,
    *,
    mail_from: str,
    rcpt_to: str,
    now: datetime,
    kind: str,
    case_id: int | None = None,
    in_reply_to_row: int | None = None,
) -> OutboxItem:
    """Queue ``message`` for delivery in the caller's transaction; returns the row.

    Nothing is sent unless the caller's transaction commits, and once it has,
    the item survives restarts until the relay accepts it. ``kind`` names the
    sender ("autoresponse", "notice", "verification"); rate limits count by it.
    ``mail_from`` is the envelope sender (bounces go there; "" is the null
    sender). The message's Message-ID is recorded so replies and bounces can be
    matched to it.
    """
    if isinstance(message, EmailMessage):
        message_id = str(message.get("Message-ID", "") or "").strip()
        raw = message.as_bytes(policy=WIRE_POLICY)
    else:
        raw = message
        message_id = _header_value(raw, b"message-id")
    if not rcpt_to or "\r" in rcpt_to or "\n" in rcpt_to:
        raise ValueError(f"bad recipient: {rcpt_to!r}")
    # One INSERT, no unit of work: the auto-responder queues one per new case.
    return insert_row(
        session,
        OutboxItem,
        {
            "created_at": now,
            "kind": kind,
            "case_id": case_id,
            "in_reply_to_row": in_reply_to_row,
            "mail_from": mail_from,
            "rcpt_to": rcpt_to.strip().lower(),
            "message_id": message_id,
            "raw": raw,
            "status": QUEUED,
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": "",
            "claimed_by": "",
        },
    )


def _header_value(raw: bytes, name: bytes) -> str:
    end = raw.find(b"\r\n\r\n")
    head = raw[: end if end != -1 else len(raw)]
    value = b""
    found = False
    for line in head.splitlines():
        if found and line[:1] in (b" ", b"\t"):
            value += line
            continue
        if found:
            break
        key, sep, rest = line.partition(b":")
        if sep and key.strip().lower() == name:
            value, found = rest, True
    return value.decode("ascii", "replace").strip()


@dataclass(frozen=True)
class Claimed:
    """An item a worker holds the claim for: everything needed to send it."""

    id: int
    mail_from: str
    rcpt_to: str
    message_id: str
    raw: bytes
    attempts: int
    case_id: int | None
    kind: str


def due_ids(
    session: Session, now: datetime, *, ignore_schedule: bool, limit: int, after_id: int = 0
) -> list[int]:
    """Ids above ``after_id`` of queued items whose turn has come (all queued ones
    with ``ignore_schedule``), oldest first."""
    query = select(OutboxItem.id).where(
        OutboxItem.id > after_id,
        OutboxItem.status == QUEUED,
        or_(OutboxItem.claimed_until.is_(None), OutboxItem.claimed_until < now),
    )
    if not ignore_schedule:
        query = query.where(OutboxItem.next_attempt_at <= now)
    return list(session.scalars(query.order_by(OutboxItem.id).limit(limit)))


def claim(session: Session, item_id: int, worker: str, now: datetime, lease: float) -> bool:
    """Compare-and-set the claim on one item; True if this worker now holds it."""
    result: Any = session.execute(
        update(OutboxItem)
        .where(
            OutboxItem.id == item_id,
            OutboxItem.status == QUEUED,
            or_(OutboxItem.claimed_until.is_(None), OutboxItem.claimed_until < now),
        )
        .values(claimed_by=worker, claimed_until=now + timedelta(seconds=lease))
    )
    return bool(result.rowcount == 1)


def load_claimed(session: Session, item_id: int) -> Claimed:
    item = session.get(OutboxItem, item_id)
    assert item is not None
    return Claimed(
        id=item.id,
        mail_from=item.mail_from,
        rcpt_to=item.rcpt_to,
        message_id=item.message_id,
        raw=item.raw,
        attempts=item.attempts,
        case_id=item.case_id,
        kind=item.kind,
    )


def _mine(item_id: int, worker: str) -> Any:
    return and_(
        OutboxItem.id == item_id,
        OutboxItem.status == QUEUED,
        OutboxItem.claimed_by == worker,
    )


def release(session: Session, item_id: int, worker: str) -> None:
    """Give a claim back untouched (the run stopped before trying this item)."""
    session.execute(
        update(OutboxItem).where(_mine(item_id, worker)).values(claimed_by="", claimed_until=None)
    )


def mark_sent(session: Session, item_id: int, now: datetime) -> bool:
    """Record the relay's acceptance. Sent is final: it is never sent again."""
    result: Any = session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id, OutboxItem.status == QUEUED)
        .values(
            status=SENT,
            sent_at=now,
            last_error="",
            claimed_by="",
            claimed_until=None,
            attempts=OutboxItem.attempts + 1,
        )
    )
    return bool(result.rowcount == 1)


def mark_retry(
    session: Session, item_id: int, worker: str, now: datetime, error: str, delay: float
) -> None:
    """A temporary failure: count the attempt and wait ``delay`` seconds."""
    session.execute(
        update(OutboxItem)
        .where(_mine(item_id, worker))
        .values(
            attempts=OutboxItem.attempts + 1,
            last_error=error[:2000],
            next_attempt_at=now + timedelta(seconds=delay),
            claimed_by="",
            claimed_until=None,
        )
    )


def mark_failed(session: Session, item_id: int, worker: str, now: datetime, error: str) -> None:
    """A permanent failure (5xx, or attempts used up): the item is not tried again."""
    session.execute(
        update(OutboxItem)
        .where(_mine(item_id, worker))
        .values(
            status=FAILED,
            attempts=OutboxItem.attempts + 1,
            last_error=error[:2000],
            claimed_by="",
            claimed_until=None,
        )
    )


def suppress(session: Session, address: str, reason: str, now: datetime) -> None:
    """Mark ``address`` undeliverable: no auto-response will be sent to it again."""
    address = address.strip().lower()
    if not address or session.get(SuppressedRecipient, address) is not None:
        return
    session.add(SuppressedRecipient(address=address, reason=reason[:2000], created_at=now))
    session.flush()


def is_suppressed(session: Session, address: str) -> str:
    """The reason ``address`` is suppressed, or "" if it is not."""
    # Asked for every auto-response: one prepared statement, no ORM object.
    row = session.connection().execute(_SUPPRESSED, {"address": address.strip().lower()}).first()
    return str(row[0] or "suppressed") if row is not None else ""


_SUPPRESSED = select(SuppressedRecipient.reason).where(
    SuppressedRecipient.address == bindparam("address")
)


def requeue(session: Session, item_ids: list[int] | None, now: datetime) -> list[int]:
    """Make failed or waiting items due now with a fresh set of attempts.

    ``None`` means every queued or failed item. Sent items are never re-sent.
    Returns the ids that were requeued.
    """
    query = select(OutboxItem).where(OutboxItem.status.in_((QUEUED, FAILED)))
    if item_ids is not None:
        query = query.where(OutboxItem.id.in_(item_ids))
    changed = []
    for item in session.scalars(query.order_by(OutboxItem.id)):
        if item.claimed_until is not None and item.claimed_until >= now:
            continue  # being delivered right now
        item.status = QUEUED
        item.attempts = 0
        item.next_attempt_at = now
        item.claimed_by = ""
        item.claimed_until = None
        changed.append(item.id)
    return changed


def item_json(item: OutboxItem) -> dict[str, Any]:
    """An outbox item for ``emaild outbox list --json``."""
    return {
        "id": item.id,
        "status": item.status,
        "kind": item.kind,
        "to": item.rcpt_to,
        "from": item.mail_from,
        "case": item.case_id,
        "message_id": item.message_id,
        "attempts": item.attempts,
        "created_at": item.created_at.isoformat(),
        "next_attempt_at": item.next_attempt_at.isoformat(),
        "sent_at": item.sent_at.isoformat() if item.sent_at else None,
        "last_error": item.last_error,
    }


def list_items(session: Session, status: str | None = None, limit: int = 1000) -> list[OutboxItem]:
    """Outbox items, newest first, optionally of one status."""
    query = select(OutboxItem).order_by(OutboxItem.id.desc()).limit(limit)
    if status:
        query = query.where(OutboxItem.status == status)
    return list(session.scalars(query))
