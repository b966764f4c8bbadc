"""Which case an inbound message belongs to, and what to do when that case is closed.

``find_thread`` applies the matching order and stops at the first hit:

1. ``In-Reply-To``, then ``References`` (nearest first), naming a Message-ID we
   sent (emaild's signed IDs are verified with the ``CaseSigner``) or stored
   (``messages.message_id``, ``outbox.message_id``; both indexed).
2. A valid signed token in the subject or the body.
3. A bare case number in a subject tag, accepted only from a participant of
   that case (``case_participants``: its customer or a cc'd address). From
   anyone else the number is only recorded (``mentioned_number``).
4. Outlook's ``Thread-Index`` (its first 22 bytes, the conversation root)
   against stored messages.
5. For bounces, DSNs and reports: the Message-ID of the original message they
   carry (``emaild.correlation.bounce``).

Nothing else threads: a subject by itself never does. ``correlate`` then
checks that the sender belongs to the case found (``emaild.correlation.strangers``:
a stranger gets a new linked case, or is appended flagged), and adds the
closed-case policy of the routing address (``closed_case``: ``reopen``,
``reopen_within`` + ``reopen_days``, ``new_linked``); machine-generated mail
(bounces, auto-replies, reports) is appended to a closed case without
reopening it. Every step taken or refused is returned as evidence for the
decision trace. Each step costs at most one indexed query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emaild.classify import Classification
from emaild.config import RoutingAddress
from emaild.correlation.bounce import embedded_message_ids
from emaild.correlation.strangers import (
    APPEND_FLAGGED,
    Members,
    is_participant,
    membership,
    strangers_open_case,
)
from emaild.correlation.tokens import CaseSigner
from emaild.mime.parse import ParsedMessage
from emaild.store.models import Case, Message, OutboxItem

CLOSED = "closed"
REOPENED = "open"
# In-Reply-To plus References; longer chains add nothing but query size.
MAX_REFERENCES = 50


@dataclass
class Thread:
    """What matching found: the case (or None), the step that found it and why."""

    case: Case | None = None
    via: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    # Evidence looked at and refused (forged tokens, strangers' case numbers...).
    refused: list[str] = field(default_factory=list)
    mentioned_number: int | None = None


@dataclass
class Correlation:
    """Where the message goes: ``case`` (None = a new case) and the trace entries."""

    case: Case | None
    linked_case_id: int | None = None
    mentioned_number: int | None = None
    # A stranger's message appended under ``stranger_reply = "append_flagged"``.
    flagged: bool = False
    trace: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def find_thread(
    session: Session, signer: CaseSigner, parsed: ParsedMessage, *, raw: bytes, report: bool
) -> Thread:
    """Apply the matching order to ``parsed``; ``report`` enables step 5 (bounces, DSNs)."""
    thread = Thread()
    steps: tuple[Callable[[Session, CaseSigner, ParsedMessage, Thread], bool], ...] = (
        _by_headers,
        _by_token,
        _by_case_number,
        _by_thread_index,
    )
    for step in steps:
        if step(session, signer, parsed, thread):
            return thread
    if report:
        ids = embedded_message_ids(raw)
        hit = _case_for_message_ids(session, signer, ids, thread)
        if hit is not None:
            thread.case, mid, how = hit
            thread.via = "bounce original"
            thread.evidence = {"message_id": mid, "how": how}
            return thread
        if ids:
            thread.refused.append(f"report carries unknown original {', '.join(ids[:3])}")
    return thread


def correlate(
    session: Session,
    signer: CaseSigner,
    parsed: ParsedMessage,
    *,
    raw: bytes,
    classification: Classification | None,
    now: datetime,
    policy_for: Callable[[Case], RoutingAddress],
    gate: Callable[[Thread], str] | None = None,
    members: Members | None = None,
) -> Correlation:
    """``find_thread``, the sender checks, then the closed-case policy of the case's
    routing address.

    ``gate`` may refuse the case found (it returns why): the message then opens
    a new case linked to it (the sender authentication policy, emaild.trust).
    ``members`` are who else belongs to every case (internal senders).
    """
    machine = classification is not None and classification.is_auto
    report = classification is not None and bool(classification.bounce or classification.report)
    thread = find_thread(session, signer, parsed, raw=raw, report=report)
    refusal = gate(thread) if gate is not None and thread.case is not None else ""
    if thread.case is not None and refusal:
        claimed = {"claimed_case": thread.case.id, "via": thread.via, "reason": refusal}
        return Correlation(None, linked_case_id=thread.case.id, trace=[("refused", claimed)])
    # The same refusal can come from the text and the HTML body: list it once.
    refused = {"refused": list(dict.fromkeys(thread.refused))} if thread.refused else {}
    if thread.case is None:
        reason = "no threading evidence" if not thread.refused else "no evidence accepted"
        entry: dict[str, Any] = {"reason": reason, **refused}
        if thread.mentioned_number is not None:
            entry["mentioned_number"] = thread.mentioned_number
        return Correlation(
            None, mentioned_number=thread.mentioned_number, trace=[("new case", entry)]
        )
    case = thread.case
    # Step 3 accepted the number from a participant only; every other step proves
    # the conversation, not the sender.
    why = "participant"
    if thread.via != "case number":
        sender = parsed.customer_addr
        routing = policy_for(case)
        why = membership(session, case, sender, routing, members or Members())
        if not why and not report:
            return _stranger(session, case, thread, sender, routing)
        # A bounce or report carries our original: it belongs with the case, but
        # its sender (a mailer daemon, or someone forging one) joins nothing.
        thread.evidence["sender_is"] = why or "not a participant: appended flagged"
    result = Correlation(case, flagged=not why)
    result.trace.append(
        ("threaded", {"case": case.id, "via": thread.via, **thread.evidence, **refused})
    )
    if not is_closed(case):
        return result
    # Two replies to one closed case at once must not open two follow-ups: lock
    # the case (PostgreSQL; SQLite writers are serialised already) and read its
    # state again, so the second sees what the first did.
    case = lock_case(session, case)
    if not is_closed(case):
        return result
    action, why = closed_case_action(case, policy_for(case), machine=machine, now=now)
    if action == "append":
        result.trace.append(("kept closed", {"case": case.id, "reason": why}))
    elif action == "reopen":
        reopen(case)
        result.trace.append(("reopened", {"case": case.id, "reason": why}))
    else:
        follow_up = open_follow_up(session, case)
        if follow_up is not None:
            # An earlier reply to this closed case already opened a follow-up:
            # more replies belong there, not to yet another case.
            result.case = follow_up
            result.trace.append(
                ("followed link", {"closed_case": case.id, "case": follow_up.id, "reason": why})
            )
        else:
            result.case = None
            result.linked_case_id = case.id
            result.trace.append(("new linked case", {"closed_case": case.id, "reason": why}))
    return result


def _stranger(
    session: Session, case: Case, thread: Thread, sender: str, routing: RoutingAddress
) -> Correlation:
    """Where a stranger's message threaded onto ``case`` goes (never onto its participants)."""
    who = sender or "a sender without an address"
    policy = routing.stranger_reply
    evidence: dict[str, Any] = {
        "case": case.id,
        "via": thread.via,
        **thread.evidence,
        "sender": sender,
        "reason": f"{who} is not a participant of case {case.id}",
        "policy": f"{routing.address}: stranger_reply = {policy}",
    }
    if policy == APPEND_FLAGGED:
        return Correlation(case, flagged=True, trace=[("appended flagged", evidence)])
    own = strangers_open_case(session, case, sender) if sender else None
    if own is not None:
        # The stranger's earlier message already opened their own linked case.
        return Correlation(own, trace=[("followed link", {**evidence, "case": own.id})])
    evidence["referred_case"] = evidence.pop("case")
    return Correlation(None, linked_case_id=case.id, trace=[("new linked case", evidence)])


def is_closed(case: Case) -> bool:
    """Whether ``case`` is closed (replies then follow the closed-case policy)."""
    return case.status == CLOSED


def lock_case(session: Session, case: Case) -> Case:
    """``case`` re-read under a row lock held until the transaction ends."""
    return session.scalars(
        select(Case)
        .where(Case.id == case.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def reopen(case: Case) -> None:
    """Reopen a closed case (the caller's transaction stores it)."""
    case.status = REOPENED
    case.closed_at = None


def closed_case_action(
    case: Case, routing: RoutingAddress, *, machine: bool, now: datetime
) -> tuple[str, str]:
    """``("append"|"reopen"|"new_linked", why)`` for a message threaded onto a closed case."""
    if machine:
        return "append", "machine-generated mail never reopens a case"
    policy = routing.closed_case
    if policy == "reopen":
        return "reopen", f"{routing.address}: closed_case = reopen"
    if policy == "new_linked":
        return "new_linked", f"{routing.address}: closed_case = new_linked"
    closed_at = _aware(case.closed_at or case.updated_at)
    age = now - closed_at
    limit = timedelta(days=routing.reopen_days)
    if age <= limit:
        return "reopen", f"closed {age.days} days ago, within reopen_days = {routing.reopen_days}"
    return "new_linked", f"closed {age.days} days ago, over reopen_days = {routing.reopen_days}"


def open_follow_up(session: Session, case: Case) -> Case | None:
    """The newest case linked to ``case`` that is still open, if any."""
    return session.scalars(
        select(Case)
        .where(Case.linked_case_id == case.id, Case.status != CLOSED)
        .order_by(Case.id.desc())
        .limit(1)
    ).first()


# --- the steps ---------------------------------------------------------------
def _by_headers(session: Session, signer: CaseSigner, p: ParsedMessage, t: Thread) -> bool:
    ids = _ordered_ids(p)
    hit = _case_for_message_ids(session, signer, ids, t)
    if hit is None:
        if ids:
            t.refused.append(f"In-Reply-To/References name no known message ({len(ids)} checked)")
        return False
    t.case, mid, how = hit
    t.via = "in-reply-to" if mid == p.in_reply_to else "references"
    t.evidence = {"message_id": mid, "how": how}
    return True


def _by_token(session: Session, signer: CaseSigner, p: ParsedMessage, t: Thread) -> bool:
    for where, text in (("subject", p.subject), ("body", p.text), ("body", p.html)):
        for token in signer.find_tokens(text):
            if token.case_id is None:
                t.refused.append(f"{where} token {token.text} fails its signature")
                continue
            case = session.get(Case, token.case_id)
            if case is None:
                t.refused.append(f"{where} token {token.text} names no existing case")
                continue
            t.case, t.via, t.evidence = case, f"{where} token", {"token": token.text}
            return True
    return False


def _by_case_number(session: Session, signer: CaseSigner, p: ParsedMessage, t: Thread) -> bool:
    sender = p.from_addr
    for number in signer.subject_numbers(p.subject):
        if t.mentioned_number is None:
            t.mentioned_number = number
        case = session.get(Case, number)
        if case is None:
            t.refused.append(f"subject names case {number}, which does not exist")
            continue
        if sender and is_participant(session, case, sender):
            t.case, t.via, t.evidence = case, "case number", {"number": number, "sender": sender}
            t.mentioned_number = None
            return True
        t.refused.append(f"subject names case {number}, but {sender or 'the sender'} is not on it")
    return False


def _by_thread_index(session: Session, signer: CaseSigner, p: ParsedMessage, t: Thread) -> bool:
    root = p.thread_index
    if not root:
        return False
    # The newest case of the conversation (a follow-up of a closed one has a
    # higher number); one probe of the (thread_index, case_id) index.
    case_id = session.scalar(select(func.max(Message.case_id)).where(Message.thread_index == root))
    case = session.get(Case, case_id) if case_id is not None else None
    if case is None:
        t.refused.append("Thread-Index names no stored conversation")
        return False
    t.case, t.via, t.evidence = case, "thread-index", {"thread_index": root}
    return True


# --- lookups -----------------------------------------------------------------
def _ordered_ids(p: ParsedMessage) -> list[str]:
    """In-Reply-To first, then References from the nearest ancestor back."""
    ids: list[str] = []
    for mid in [p.in_reply_to, *reversed(p.references)]:
        if mid and mid not in ids and mid != p.message_id:
            ids.append(mid)
    return ids[:MAX_REFERENCES]


def _case_for_message_ids(
    session: Session, signer: CaseSigner, ids: list[str], t: Thread
) -> tuple[Case, str, str] | None:
    """The first of ``ids`` (in order) that names a case: ``(case, id, how)``."""
    signed = {mid: signer.case_from_message_id(mid) for mid in ids if signer.is_ours(mid)}
    stored: dict[str, int] = {}
    looked_up: set[str] = set()
    for index, mid in enumerate(ids):
        case_id, how = signed.get(mid), "signed"
        if case_id is None and mid not in looked_up:
            # The first id the signature cannot settle: look up it and every
            # later one at once, so a whole References chain costs one query.
            batch = [m for m in ids[index:] if signed.get(m) is None and m not in looked_up]
            stored.update(_stored_cases(session, Message, batch))
            # Outbox rows are mail we queued, stored or not yet; they matter
            # for IDs a secret rotation left unverifiable.
            rest = [m for m in batch if m not in stored]
            if rest:
                stored.update(_stored_cases(session, OutboxItem, rest))
            looked_up.update(batch)
        if case_id is None and mid in stored:
            case_id, how = stored[mid], "stored"
        if case_id is None:
            if mid in signed:
                t.refused.append(f"{mid} looks like ours but its signature fails")
            continue
        case = session.get(Case, case_id)
        if case is not None:
            return case, mid, how
        t.refused.append(f"{mid} names case {case_id}, which does not exist")
    return None


def _stored_cases(
    session: Session, model: type[Message] | type[OutboxItem], ids: list[str]
) -> dict[str, int]:
    """``{message_id: case_id}`` for ``ids`` stored in ``model``'s table (one indexed IN)."""
    rows = session.execute(
        select(model.message_id, model.case_id).where(
            model.message_id.in_(ids), model.case_id.is_not(None)
        )
    )
    found: dict[str, int] = {}
    for mid, case_id in rows:
        if case_id is not None:
            found.setdefault(mid, case_id)
    return found


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
