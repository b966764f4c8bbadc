"""Reading cases back for people and scripts (``emaild cases``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from emaild.config import Config
from emaild.store.models import Case, Message


def case_number(number: int) -> str:
    return f"{number:08d}"


def case_summary(case: Case, message_count: int) -> dict[str, Any]:
    return {
        "number": case.id,
        "subject": case.subject,
        "status": case.status,
        "priority": case.priority,
        "origin": case.origin,
        "owner": case.owner,
        "category": case.category,
        "tags": list(case.tags or []),
        "routing_address": case.routing_address,
        "customer": case.customer,
        "customer_name": case.customer_name,
        "linked_case": case.linked_case_id,
        "mentioned_number": case.mentioned_number,
        "message_count": message_count,
        "created_at": case.created_at.isoformat(),
        "updated_at": case.updated_at.isoformat(),
        "closed_at": case.closed_at.isoformat() if case.closed_at else None,
        "version": case.version,
    }


def load_case(session: Session, number: int) -> Case | None:
    return session.scalars(
        select(Case)
        .where(Case.id == number)
        .options(
            selectinload(Case.messages).selectinload(Message.attachments),
            selectinload(Case.participants),
        )
    ).first()


def case_detail(case: Case, config: Config) -> dict[str, Any]:
    data = case_summary(case, len(case.messages))
    data["subject_token"] = subject_token(case.id, config)
    data["participants"] = [
        {"address": p.address, "role": p.role}
        for p in sorted(case.participants, key=lambda p: p.id)
    ]
    data["messages"] = [message_detail(m) for m in case.messages]
    return data


def subject_token(number: int, config: Config) -> str:
    """The exact token emaild puts in subjects for case ``number`` (threading owns it)."""
    from emaild.correlation.tokens import subject_token as render

    return render(config, number)


# The stage whose trace entry carries a message's sender authentication.
AUTH_STAGE = "authenticate"
NO_AUTH = {"spf": "none", "dkim": "none", "dmarc": "none", "source": "none"}


def message_auth(trace: list[dict[str, Any]] | None) -> dict[str, str]:
    """The ``auth`` object of an inbound message, from its ``authenticate`` trace entry.

    Messages stored before the stage existed have none: all "none".
    """
    for entry in trace or ():
        auth = entry.get("auth") if entry.get("stage") == AUTH_STAGE else None
        if isinstance(auth, dict):
            return {key: str(auth.get(key, "none")) for key in NO_AUTH}
    return dict(NO_AUTH)


def message_spam(trace: list[dict[str, Any]] | None) -> dict[str, Any]:
    """``{"flag": "yes"|"no"|"unscanned", "score": N|None}`` from the spam trace entry."""
    for entry in trace or ():
        if entry.get("stage") == AUTH_STAGE and entry.get("decision") == "spam":
            return {"flag": entry.get("flag", "no"), "score": entry.get("score")}
    return {"flag": "no", "score": None}


def message_detail(m: Message) -> dict[str, Any]:
    data = _message_fields(m)
    if m.direction == "in":
        data["auth"] = message_auth(m.decision_trace)
        data["spam"] = message_spam(m.decision_trace)
    return data


def _message_fields(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "message_id": m.message_id,
        "direction": m.direction,
        "state": m.state,
        "channel": m.channel,
        "subject": m.subject,
        "from": m.from_addr,
        "from_name": m.from_name,
        "to": list(m.to or []),
        "cc": list(m.cc or []),
        "date": m.date.isoformat() if m.date else None,
        "received_at": m.received_at.isoformat(),
        "in_reply_to": m.in_reply_to,
        "references": list(m.references or []),
        "text": m.text,
        "new_text": m.new_text,
        "html": m.html,
        "raw_sha256": m.raw_sha256,
        "raw_size": m.raw_size,
        "defects": list(m.defects or []),
        "attachments": [
            {
                "id": a.id,
                "filename": a.filename,
                "content_type": a.content_type,
                "content_id": a.content_id,
                "disposition": a.disposition,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in m.attachments
        ],
        "decision_trace": list(m.decision_trace or []),
    }
