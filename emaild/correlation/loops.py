"""Loops: a burst of identical messages, told apart by their fingerprint.

The fingerprint covers sender, subject and the start of the body together,
as the reference product's loop detection does; ``recent_count`` and
``newest_case`` are the two questions the ``loopdetect`` stage asks about it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from emaild.mime.parse import ParsedMessage
from emaild.store.models import Message

BODY_CHARS = 8192

# Asked for every message: built once (building a statement costs more than running it).
_COUNT = select(func.count(Message.id)).where(
    Message.fingerprint == bindparam("fp"),
    Message.direction == "in",
    Message.received_at >= bindparam("since"),
)


def fingerprint(parsed: ParsedMessage) -> str:
    """sha256 over sender, subject and the start of the body: "the same message again"."""
    material = "\x00".join((parsed.from_addr, parsed.subject, parsed.text[:BODY_CHARS]))
    return hashlib.sha256(material.encode("utf-8", "replace")).hexdigest()


def recent_count(session: Session, fp: str, since: datetime) -> int:
    """Inbound messages with fingerprint ``fp`` received since ``since``."""
    return int(session.connection().execute(_COUNT, {"fp": fp, "since": since}).scalar() or 0)


def newest_case(session: Session, fp: str, since: datetime) -> int | None:
    """The case of the newest such message that has one."""
    return session.scalars(
        select(Message.case_id)
        .where(
            Message.fingerprint == fp,
            Message.direction == "in",
            Message.received_at >= since,
            Message.case_id.is_not(None),
        )
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(1)
    ).first()
