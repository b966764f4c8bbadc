"""Finding one person's rows: the address, their messages, their cases."""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any

from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.orm import Session

from emaild.errors import InputError
from emaild.privacy.scrub import like_pattern
from emaild.store.models import Case, CaseParticipant, Message, QuarantineEntry

MAX_ADDRESS = 320


def normalise(address: str) -> str:
    """The address as stored (lower case), or ``InputError``."""
    value = address.strip().strip("<>").lower()
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or len(value) > MAX_ADDRESS:
        raise InputError(f"contact: not an email address: {address!r}")
    if any(c.isspace() or c in "<>,;\"'" for c in value):
        raise InputError(f"contact: not an email address: {address!r}")
    return value


def _addresses(values: list[Any]) -> set[str]:
    return {a.lower() for _, a in getaddresses([str(v) for v in values]) if a}


def sent_by(address: str) -> Any:
    """A condition: a message this person sent (From, envelope sender or Reply-To)."""
    return or_(
        func.lower(Message.from_addr) == address,
        func.lower(Message.envelope_from) == address,
        func.lower(Message.reply_to) == address,
    )


def addressed_to(address: str) -> Any:
    """A condition: a message whose recipients may include this person (check exactly)."""
    like = like_pattern(address)
    return or_(
        *(
            func.lower(cast(column, Text)).like(like, escape="\\")
            for column in (Message.to, Message.cc, Message.envelope_to)
        )
    )


def recipients(message: Any) -> set[str]:
    """Every address a message was written or delivered to."""
    return _addresses(list(message.to) + list(message.cc) + list(message.envelope_to))


def their_messages(session: Session, address: str, *, sent_alone: bool) -> list[Message]:
    """Messages the person sent, and outbound ones to them (``sent_alone``: to them only)."""
    found = {m.id: m for m in session.scalars(select(Message).where(sent_by(address)))}
    outbound = select(Message).where(Message.direction == "out", addressed_to(address))
    for message in session.scalars(outbound):
        got = recipients(message)
        if address in got and (not sent_alone or got == {address}):
            found[message.id] = message
    return [found[k] for k in sorted(found)]


def their_cases(session: Session, address: str, message_case_ids: set[int]) -> set[int]:
    """Cases the person is customer or participant of, or has a message on."""
    cases = set(message_case_ids)
    cases.update(session.scalars(select(Case.id).where(func.lower(Case.customer) == address)))
    cases.update(
        session.scalars(
            select(CaseParticipant.case_id).where(func.lower(CaseParticipant.address) == address)
        )
    )
    return cases


def their_quarantine(session: Session, address: str) -> list[QuarantineEntry]:
    """Quarantine entries of mail the person sent (envelope sender or From header)."""
    like = like_pattern(address)
    query = select(QuarantineEntry).where(
        or_(
            func.lower(QuarantineEntry.envelope_from) == address,
            func.lower(QuarantineEntry.headers).like(like, escape="\\"),
        )
    )
    out = []
    for entry in session.scalars(query.order_by(QuarantineEntry.id)):
        if entry.envelope_from.lower() == address or address in _from_header(entry.headers):
            out.append(entry)
    return out


def _from_header(headers: str) -> set[str]:
    from email.parser import HeaderParser
    from email.policy import compat32

    message = HeaderParser(policy=compat32).parsestr(headers + "\n\n", headersonly=True)
    return _addresses(message.get_all("From", []) + message.get_all("Sender", []))
