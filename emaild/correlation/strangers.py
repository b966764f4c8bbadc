"""Who may join a case by threading, and what happens to a stranger who tries (contract 7).

Threading evidence (a Message-ID in ``In-Reply-To``/``References``, a signed
token, Outlook's ``Thread-Index``) proves which conversation a message refers
to, not that its sender belongs to it: Message-IDs travel in Cc, forwards and
list archives, and our auto-response quotes the token to the customer, who
may forward it. So the sender of a threaded message (From, else Reply-To) is
checked against the case:

- a participant of the case (its customer, or an address in To/Cc of its
  mail, ``case_participants``);
- one of our own routing addresses;
- an internal sender (``threading.internal_senders``: addresses or ``@domain``);
- an address in one of the routing address's ``trusted_domains``.

Anyone else is a stranger, handled by the routing address's
``stranger_reply``: ``new_linked_case`` (a new case linked to the one referred
to) or ``append_flagged`` (appended as a ``flagged`` message: no participant,
no auto-response, never a recipient of replies). A stranger never becomes a
participant by threading.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.config import RoutingAddress
from emaild.store.models import Case, CaseParticipant

NEW_LINKED = "new_linked_case"
APPEND_FLAGGED = "append_flagged"
# The message-row state of a stranger's message appended to a case.
FLAGGED = "flagged"


@dataclass(frozen=True)
class Members:
    """Senders that belong to every case: our own addresses and internal senders."""

    own: frozenset[str] = frozenset()
    # Addresses, and domains written "@domain".
    internal: frozenset[str] = frozenset()

    @classmethod
    def of(cls, own: Collection[str], internal: Collection[str]) -> Members:
        return cls(frozenset(a.lower() for a in own), frozenset(a.lower() for a in internal))


def membership(
    session: Session, case: Case, sender: str, routing: RoutingAddress, members: Members
) -> str:
    """Why ``sender`` belongs to ``case`` ("customer", "participant", ...), or "" if not."""
    sender = sender.strip().lower()
    if not sender:
        return ""
    if case.customer and case.customer.lower() == sender:
        return "customer"
    domain = sender.rpartition("@")[2]
    if sender in members.own:
        return "our address"
    if sender in members.internal or f"@{domain}" in members.internal:
        return "internal sender"
    if domain in routing.trusted_domains:
        return f"trusted domain {domain}"
    if is_participant(session, case, sender):
        return "participant"
    return ""


def is_participant(session: Session, case: Case, address: str) -> bool:
    """``address`` is the customer of ``case`` or on its participant list (one indexed query)."""
    if case.customer == address:
        return True
    found = session.scalars(
        select(CaseParticipant.id)
        .where(CaseParticipant.case_id == case.id, CaseParticipant.address == address)
        .limit(1)
    ).first()
    return found is not None


def strangers_open_case(session: Session, case: Case, sender: str) -> Case | None:
    """The open case ``sender`` already got for referring to ``case`` (their own follow-up)."""
    return session.scalars(
        select(Case)
        .where(Case.linked_case_id == case.id, Case.customer == sender, Case.status != "closed")
        .order_by(Case.id.desc())
        .limit(1)
    ).first()
