"""Deleting message rows: what else points at a message is let go first."""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from emaild.store.models import Attachment, Message, OutboxItem, QuarantineEntry, VerificationToken

CHUNK = 500


def forget_messages(session: Session, ids: list[int]) -> None:
    """Delete messages ``ids`` and their attachment rows (caller's transaction).

    A quarantine entry released into one, the token it carried and an outbox
    item answering it keep their own rows, without the link.
    """
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        session.execute(
            update(QuarantineEntry)
            .where(QuarantineEntry.message_row_id.in_(chunk))
            .values(message_row_id=None)
        )
        session.execute(
            update(VerificationToken)
            .where(VerificationToken.message_row_id.in_(chunk))
            .values(message_row_id=None)
        )
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.in_reply_to_row.in_(chunk))
            .values(in_reply_to_row=None)
        )
        session.execute(delete(Attachment).where(Attachment.message_id.in_(chunk)))
        session.execute(delete(Message).where(Message.id.in_(chunk)))
