"""``emaild export --contact ADDRESS``: one person's data as an mbox plus JSON.

The mbox holds, byte for byte, every message they sent, every message we sent
them (alone or with others) and every quarantined message of theirs, in the
"mboxrd" format: each message follows a ``From `` line, and a line of the
message that starts with ``From `` (after any number of ``>``) gets one more
``>``, which a reader removes again. The JSON describes the same messages
(with the sha256 of each one's bytes, to check the unquoting), their cases,
participant rows and quarantine entries.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emaild.privacy.contact import normalise, their_cases, their_messages, their_quarantine
from emaild.store.blobs import BlobStore
from emaild.store.models import Attachment, Case, CaseParticipant

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


def collect(session: Session, contact: str, now: datetime) -> dict[str, Any]:
    """The JSON half of the export (it also lists what goes into the mbox)."""
    address = normalise(contact)
    messages = their_messages(session, address, sent_alone=False)
    quarantined = their_quarantine(session, address)
    case_ids = their_cases(session, address, {m.case_id for m in messages if m.case_id})
    cases = session.scalars(select(Case).where(Case.id.in_(sorted(case_ids)))).all()
    participants = session.scalars(
        select(CaseParticipant).where(func.lower(CaseParticipant.address) == address)
    ).all()
    attachments: dict[int, list[dict[str, Any]]] = {}
    ids = [m.id for m in messages]
    for start in range(0, len(ids), 500):
        query = select(Attachment).where(Attachment.message_id.in_(ids[start : start + 500]))
        for a in session.scalars(query.order_by(Attachment.id)):
            attachments.setdefault(a.message_id, []).append(
                {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            )
    return {
        "contact": address,
        "exported_at": now.isoformat(),
        "cases": [
            {
                "number": c.id,
                "subject": c.subject,
                "status": c.status,
                "customer": c.customer == address,
                "created_at": c.created_at.isoformat(),
                "closed_at": c.closed_at.isoformat() if c.closed_at else None,
            }
            for c in cases
        ],
        "participant_of": [{"case": p.case_id, "role": p.role} for p in participants],
        "messages": [
            {
                "id": m.id,
                "case": m.case_id,
                "direction": m.direction,
                "state": m.state,
                "from": m.from_addr,
                "to": m.to,
                "cc": m.cc,
                "subject": m.subject,
                "date": m.date.isoformat() if m.date else None,
                "received_at": m.received_at.isoformat(),
                "text": m.text,
                "raw_sha256": m.raw_sha256,
                "raw_size": m.raw_size,
                "in_mbox": bool(m.raw_sha256),
                "attachments": attachments.get(m.id, []),
            }
            for m in messages
        ],
        "quarantine": [
            {
                "id": e.id,
                "created_at": e.created_at.isoformat(),
                "reason": e.reason,
                "status": e.status,
                "raw_sha256": e.raw_sha256,
                "raw_size": e.raw_size,
                "in_mbox": bool(e.raw_sha256),
            }
            for e in quarantined
        ],
    }


def mbox_chunks(blobs: BlobStore, data: dict[str, Any]) -> Iterator[bytes]:
    """The mbox half: the raw bytes of every message and entry ``collect`` listed."""
    items = [(m["raw_sha256"], m["received_at"]) for m in data["messages"]]
    items += [(e["raw_sha256"], e["created_at"]) for e in data["quarantine"]]
    for sha, when in items:
        if not sha or not blobs.exists(sha):
            continue
        yield _from_line(when) + quote(blobs.read(sha)) + b"\n"


def quote(raw: bytes) -> bytes:
    """mboxrd quoting: ``>`` before every line that starts with ``>*From ``."""
    body = _FROM_LINE.sub(rb">\1", raw)
    return body if body.endswith(b"\n") else body + b"\n"


def unquote(quoted: bytes) -> bytes:
    """The reverse of ``quote`` (for readers and tests)."""
    return re.sub(rb"^>(>*From )", rb"\1", quoted, flags=re.MULTILINE)


def _from_line(iso: str) -> bytes:
    when = datetime.fromisoformat(iso).astimezone(UTC)
    return f"From MAILER-DAEMON {when.strftime('%a %b %d %H:%M:%S %Y')}\n".encode()
