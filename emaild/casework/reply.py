"""An agent's reply: composed with the case's threading marks, stored, queued.

The reply carries a signed Message-ID naming the case, the case's subject
token and ``In-Reply-To``/``References`` to the message answered, so the
customer's answer threads back onto the case. It is stored on the case as an
outbound message (raw bytes in the blob store) and queued in the outbox in
the caller's transaction (contract 6: nothing is sent for a change rolled
back). Header values from the request go through ``one_line`` and a strict
address check, so a CR or LF can never start a header of its own.
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.autoresponse.compose import MAX_REFERENCES, usable_address, valid_msg_id
from emaild.casework.events import record
from emaild.casework.ops import get_case, touch, update_case
from emaild.casework.reply_template import render_reply
from emaild.correlation.tokens import CaseSigner
from emaild.errors import InputError
from emaild.outbox.queue import WIRE_POLICY, enqueue
from emaild.store.blobs import BlobStore
from emaild.store.models import Case, CaseParticipant, Message, OutboxItem
from emaild.store.rows import add_participants, insert_row
from emaild.text import one_line

if TYPE_CHECKING:
    from emaild.autoresponse.templates import TemplateSet

MAX_RECIPIENTS = 50
MAX_TEXT_CHARS = 1_000_000
KIND = "reply"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ReplyRequest:
    """What an agent sends; ``to``/``cc`` None = the case's customer / participants."""

    text: str
    html: str = ""
    to: list[str] | None = None
    cc: list[str] | None = None
    subject: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    close: bool = False
    # A template from templates_dir rendering the text (emaild.casework.reply_template).
    template: str = ""


@dataclass(frozen=True)
class Queued:
    message_row_id: int
    message_id: str
    outbox_ids: list[int]
    recipients: list[str]


def recipients(values: list[str], what: str) -> list[Address]:
    """``values`` ("addr" or "Name <addr>") as addresses, refusing anything odd."""
    out: list[Address] = []
    for value in values:
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise InputError(f"{what}: a line break is not allowed in an address")
        parsed = getaddresses([value])
        if len(parsed) != 1 or not usable_address(parsed[0][1]):
            raise InputError(f"{what}: not a usable address: {value!r}")
        name, addr = parsed[0]
        out.append(Address(display_name=one_line(name, 300), addr_spec=addr.lower()))
    return out


def queue_reply(
    session: Session,
    *,
    signer: CaseSigner,
    blobs: BlobStore,
    own_addresses: set[str],
    from_name: str,
    number: int,
    request: ReplyRequest,
    actor: str,
    now: datetime,
    templates: TemplateSet | None = None,
) -> Queued:
    """Compose, store and queue the reply to case ``number`` (caller's transaction)."""
    if not request.template and not request.text.strip() and not request.html.strip():
        raise InputError("text: a reply needs text")
    case = get_case(session, number)
    answered = _last_inbound(session, case.id)
    to = recipients(request.to, "to") if request.to is not None else _customer(case)
    if to and request.template:
        rendered = render_reply(
            request.template,
            request.text,
            templates,
            case=case,
            answered=answered,
            to=to[0],
            routing_name=from_name,
            signer=signer,
            actor=actor,
        )
        request = replace(
            request,
            text=rendered.text,
            html=request.html or rendered.html,
            subject=request.subject or rendered.subject,
        )
    if len(request.text) > MAX_TEXT_CHARS or len(request.html) > MAX_TEXT_CHARS:
        raise InputError(f"text: at most {MAX_TEXT_CHARS} characters")
    if request.cc is not None:
        cc = recipients(request.cc, "cc")
    else:
        cc = _participants(session, case, {a.addr_spec for a in to} | own_addresses)
    if not to:
        raise InputError("to: the case has no customer address; give one")
    if len(to) + len(cc) > MAX_RECIPIENTS:
        raise InputError(f"to: at most {MAX_RECIPIENTS} recipients")
    message_id = signer.message_id(case.id, case.routing_address)
    raw = _compose(case, answered, signer, request, to, cc, from_name, message_id, now)
    sha, size = blobs.put(raw)
    row = insert_row(
        session,
        Message,
        {
            "case_id": case.id,
            "direction": "out",
            "state": "stored",
            "dedup_key": f"mid:{message_id}",
            "message_id": message_id,
            "in_reply_to": answered.message_id if answered else "",
            "references": _references(answered),
            "from_addr": case.routing_address,
            "from_name": from_name,
            "to": [str(a) for a in to],
            "cc": [str(a) for a in cc],
            "subject": str(_subject(case, signer, request)),
            "text": request.text,
            "html": request.html,
            "new_text": request.text,
            "raw_sha256": sha,
            "raw_size": size,
            "channel": "api",
            "envelope_from": case.routing_address,
            "envelope_to": [a.addr_spec for a in to + cc],
            "routing_address": case.routing_address,
            "received_at": now,
            "decision_trace": [{"stage": "reply", "decision": "queued", "actor": actor}],
        },
    )
    outbox = [
        enqueue(
            session,
            raw,
            mail_from=case.routing_address,
            rcpt_to=a.addr_spec,
            now=now,
            kind=KIND,
            case_id=case.id,
            in_reply_to_row=answered.id if answered else None,
        ).id
        for a in to + cc
    ]
    # Whoever the agent wrote to takes part in the case now: their answers may join it.
    add_participants(
        session,
        case.id,
        {a.addr_spec: "cc" for a in to + cc if a.addr_spec not in own_addresses},
        new=False,
    )
    touch(session, case, now)
    record(
        session,
        case.id,
        "reply.queued",
        actor,
        now,
        message_id=message_id,
        message=row.id,
        to=[str(a) for a in to + cc],
    )
    if request.close and case.status != "closed":
        session.expire(case)
        update_case(session, case.id, {"status": "closed"}, actor=actor, now=now)
    return Queued(row.id, message_id, outbox, [a.addr_spec for a in to + cc])


def delivery_state(session: Session, message_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Outbox state per Message-ID: one entry per recipient."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not message_ids:
        return out
    query = select(OutboxItem).where(OutboxItem.message_id.in_(message_ids)).order_by(OutboxItem.id)
    for item in session.scalars(query):
        out.setdefault(item.message_id, []).append(
            {
                "to": item.rcpt_to,
                "status": item.status,
                "attempts": item.attempts,
                "last_error": item.last_error,
                "sent_at": item.sent_at.isoformat() if item.sent_at else None,
            }
        )
    return out


def _last_inbound(session: Session, case_id: int) -> Message | None:
    return session.scalars(
        select(Message)
        .where(Message.case_id == case_id, Message.direction == "in")
        .order_by(Message.id.desc())
        .limit(1)
    ).first()


def _customer(case: Case) -> list[Address]:
    if not usable_address(case.customer):
        return []
    return [Address(display_name=one_line(case.customer_name, 300), addr_spec=case.customer)]


def _participants(session: Session, case: Case, skip: set[str]) -> list[Address]:
    query = select(CaseParticipant.address).where(
        CaseParticipant.case_id == case.id, CaseParticipant.role == "cc"
    )
    return [
        Address(addr_spec=a)
        for a in session.scalars(query.order_by(CaseParticipant.id))
        if a not in skip and usable_address(a)
    ]


def _references(answered: Message | None) -> list[str]:
    if answered is None:
        return []
    refs = [r for r in (answered.references or []) if valid_msg_id(r)]
    if valid_msg_id(answered.message_id) and answered.message_id not in refs:
        refs.append(answered.message_id)
    return refs[-MAX_REFERENCES:]


def _subject(case: Case, signer: CaseSigner, request: ReplyRequest) -> str:
    base = one_line(request.subject or case.subject, 900)
    if not request.subject and not base.lower().startswith("re:"):
        base = f"Re: {base}".strip()
    return signer.mark_subject(base, case.id)


def _compose(
    case: Case,
    answered: Message | None,
    signer: CaseSigner,
    request: ReplyRequest,
    to: list[Address],
    cc: list[Address],
    from_name: str,
    message_id: str,
    now: datetime,
) -> bytes:
    msg = EmailMessage(policy=email.policy.SMTPUTF8)
    msg["From"] = Address(display_name=one_line(from_name, 300), addr_spec=case.routing_address)
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = _subject(case, signer, request)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    if answered is not None and valid_msg_id(answered.message_id):
        msg["In-Reply-To"] = answered.message_id
    references = _references(answered)
    if references:
        msg["References"] = " ".join(references)
    text = request.text
    token = signer.body_token(case.id)
    if token:
        text = f"{text.rstrip()}\n\n{token}\n"
    msg.set_content(text)
    if request.html:
        msg.add_alternative(request.html, subtype="html")
    for a in request.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(
            a.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=one_line(a.filename, 255) or "attachment",
        )
    return msg.as_bytes(policy=WIRE_POLICY)
