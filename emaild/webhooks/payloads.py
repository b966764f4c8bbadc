"""What an event's JSON says: the case summary, the message's new text, API links.

Bodies are bounded: texts are cut at ``MAX_TEXT_CHARS`` (and flagged),
attachments are links (never content), at most ``MAX_ATTACHMENTS`` listed. The
rest of a case is one API call away (``links``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.store.models import Attachment, Case, Message

API = "/api/v1"
MAX_TEXT_CHARS = 16_384
MAX_SUBJECT_CHARS = 1000
MAX_ATTACHMENTS = 50
MAX_ADDRESSES = 50

# case_events kinds that are a field change: one ``case.updated`` per change.
_FIELD_KINDS = ("case.status", "case.assigned", "case.priority", "case.category", "case.tags")
# case_events kinds sent under their own name.
_SAME = ("case.created", "message.received", "message.sent", "message.bounced", "note.added")
# Which case_events kinds carry a message row id in data["message"].
_WITH_MESSAGE = ("message.received", "message.sent", "message.bounced")


def webhook_type(case_event_kind: str) -> str | None:
    """The webhook event type a ``case_events`` kind is sent as (None: not sent)."""
    if case_event_kind in _SAME:
        return case_event_kind
    if case_event_kind in _FIELD_KINDS:
        return "case.updated"
    return None


def body(kind: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of every delivery (README: Webhooks)."""
    return {"type": kind, "timestamp": at.isoformat(), "data": data}


def cut(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def case_json(case: Any) -> dict[str, Any]:
    """The case summary every case event carries (``case.number`` is the case number)."""
    subject, _ = cut(case.subject or "", MAX_SUBJECT_CHARS)
    number = int(case.id)
    return {
        "number": number,
        "subject": subject,
        "status": case.status,
        "priority": case.priority,
        "owner": case.owner,
        "category": case.category,
        "tags": list(case.tags or []),
        "routing_address": case.routing_address,
        "customer": case.customer,
        "customer_name": case.customer_name,
        "linked_case": case.linked_case_id,
        "created_at": _iso(case.created_at),
        "updated_at": _iso(case.updated_at),
        "version": case.version,
        "links": {
            "self": f"{API}/cases/{number}",
            "events": f"{API}/cases/{number}/events",
        },
    }


def message_json(message: Any, attachments: list[Any]) -> dict[str, Any]:
    """A message: who, subject, its new text (bounded), attachments as links."""
    text, truncated = cut(message.new_text or "", MAX_TEXT_CHARS)
    subject, _ = cut(message.subject or "", MAX_SUBJECT_CHARS)
    return {
        "id": message.id,
        "direction": message.direction,
        "message_id": message.message_id,
        "from": message.from_addr,
        "from_name": message.from_name,
        "to": list(message.to or [])[:MAX_ADDRESSES],
        "cc": list(message.cc or [])[:MAX_ADDRESSES],
        "subject": subject,
        "new_text": text,
        "new_text_truncated": truncated,
        "received_at": _iso(message.received_at),
        "is_auto": message.is_auto,
        "is_bounce": message.is_bounce,
        "attachments": [
            {
                "id": a.id,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "link": f"{API}/attachments/{a.id}",
            }
            for a in attachments[:MAX_ATTACHMENTS]
        ],
        "attachments_total": len(attachments),
        "links": {"raw": f"{API}/messages/{message.id}/raw"},
    }


_CASE_COLUMNS = (
    Case.id,
    Case.subject,
    Case.status,
    Case.priority,
    Case.owner,
    Case.category,
    Case.tags,
    Case.routing_address,
    Case.customer,
    Case.customer_name,
    Case.linked_case_id,
    Case.created_at,
    Case.updated_at,
    Case.version,
)
_MESSAGE_COLUMNS = (
    Message.id,
    Message.direction,
    Message.message_id,
    Message.from_addr,
    Message.from_name,
    Message.to,
    Message.cc,
    Message.subject,
    Message.new_text,
    Message.received_at,
    Message.is_auto,
    Message.is_bounce,
)


class Snapshot:
    """The cases and messages one change's events refer to, read once (current values)."""

    def __init__(self, session: Session, case_ids: Iterable[int], message_ids: Iterable[int]):
        cases, messages = sorted(set(case_ids)), sorted(set(message_ids))
        self.cases: dict[int, Any] = {}
        self.messages: dict[int, Any] = {}
        self.attachments: dict[int, list[Any]] = {}
        if cases:
            query = select(*_CASE_COLUMNS).where(Case.id.in_(cases)).order_by(Case.id)
            if session.get_bind().dialect.name == "postgresql":
                # Events of one case get their ids in commit order: a change that did
                # not lock the case itself (a reply marked sent) waits for one that
                # did (its ids would otherwise be smaller yet become visible later,
                # and the delivery order per case is id order). SQLite has one writer.
                query = query.with_for_update()
            self.cases = {row.id: row for row in session.execute(query)}
        if messages:
            rows = session.execute(select(*_MESSAGE_COLUMNS).where(Message.id.in_(messages)))
            self.messages = {row.id: row for row in rows}
            query = (
                select(
                    Attachment.id,
                    Attachment.message_id,
                    Attachment.filename,
                    Attachment.content_type,
                    Attachment.size,
                )
                .where(Attachment.message_id.in_(messages))
                .order_by(Attachment.id)
            )
            for a in session.execute(query):
                self.attachments.setdefault(a.message_id, []).append(a)

    def routing_address(self, case_id: int) -> str:
        case = self.cases.get(case_id)
        return str(case.routing_address) if case is not None else ""

    def message(self, message_id: Any) -> dict[str, Any] | None:
        row = self.messages.get(message_id) if isinstance(message_id, int) else None
        if row is None:
            return None
        return message_json(row, self.attachments.get(row.id, []))


def message_ids(events: Iterable[tuple[int, str, dict[str, Any]]]) -> list[int]:
    """The message rows ``events`` mention (to read them in one query)."""
    return [
        int(data["message"])
        for _, kind, data in events
        if kind in _WITH_MESSAGE and isinstance(data.get("message"), int)
    ]


def case_event_data(
    snapshot: Snapshot, case_id: int, kind: str, actor: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """``data`` of one webhook event made of the ``case_events`` data ``items``."""
    case = snapshot.cases.get(case_id)
    data: dict[str, Any] = {"case": case_json(case) if case is not None else {"number": case_id}}
    data["actor"] = actor
    first = items[0]
    if kind == "case.updated":
        data["changes"] = [
            {"field": i.get("field"), "from": i.get("from"), "to": i.get("to")} for i in items
        ]
    elif kind == "note.added":
        text, truncated = cut(str(first.get("text", "")), MAX_TEXT_CHARS)
        data["note"] = {"text": text, "truncated": truncated}
    elif kind == "case.created":
        data["channel"] = first.get("channel", "")
    if kind in _WITH_MESSAGE:
        data["message"] = snapshot.message(first.get("message"))
        for key in ("to", "outbox_kind"):
            if key in first:
                data[key] = first[key]
    return data
