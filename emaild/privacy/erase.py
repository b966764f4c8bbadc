"""``emaild erase --contact ADDRESS``: remove one person's data, leave a tombstone.

In one transaction:

- their messages go, with attachment rows: what they sent (From, envelope
  sender, Reply-To) and what we sent to them alone; their quarantine entries,
  outbox items to them, their participant rows and their suppression entry go;
- cases where they were the customer keep their history, without the customer;
- every other copy of the address, in any text column of any table (other
  people's mail that Cc'd them, events' data, decision traces, idempotent
  answers...), becomes ``erased@erased.invalid``; so does every copy in the raw
  bytes and attachments of the messages left on their cases and of any row that
  mentioned them (a new blob each: blobs are content-addressed);
- each of their cases gets a ``contact.erased`` event (the tombstone), which
  says how many messages went and never the address.

After the commit, blobs no remaining row refers to are deleted
(``blobrefs.remove_unreferenced``): an attachment someone else also sent stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from emaild.casework.events import record_many
from emaild.errors import InputError
from emaild.privacy.blobrefs import BlobsFreed, message_blobs, quarantined_blobs
from emaild.privacy.blobrefs import remove_unreferenced as remove_blobs
from emaild.privacy.contact import normalise, their_cases, their_messages, their_quarantine
from emaild.privacy.rowrefs import forget_messages
from emaild.privacy.scrub import redact_blob, redact_bytes, scrub_columns
from emaild.reports.topics import index_case
from emaild.store.blobs import BlobStore
from emaild.store.database import Database
from emaild.store.models import (
    Attachment,
    Case,
    CaseParticipant,
    CaseTerm,
    Message,
    OutboxItem,
    QuarantineEntry,
    SuppressedRecipient,
)

TOMBSTONE = "contact.erased"


@dataclass
class EraseReport:
    """What an erasure removed and rewrote."""

    messages: int = 0
    cases: list[int] = field(default_factory=list)
    participants: int = 0
    quarantine_entries: int = 0
    outbox_items: int = 0
    rows_rewritten: int = 0
    blobs_rewritten: int = 0
    blobs: BlobsFreed = field(default_factory=BlobsFreed)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def erase(
    db: Database,
    blobs: BlobStore,
    contact: str,
    *,
    actor: str,
    now: datetime,
    own_addresses: Iterable[str] = (),
) -> EraseReport:
    """Erase ``contact``'s data (see the module doc); ``InputError`` for one of ours."""
    address = normalise(contact)
    if address in {a.lower() for a in own_addresses}:
        raise InputError(f"contact: {address} is one of our routing addresses")
    started = time.time()
    report = EraseReport()
    candidates: set[str] = set()

    def work(session: Session) -> None:
        candidates.clear()
        candidates.update(_erase_rows(session, blobs, address, report, actor, now))

    db.run(work, attempts=3)
    report.blobs = remove_blobs(db, blobs, candidates, started=started)
    return report


def _erase_rows(
    session: Session, blobs: BlobStore, address: str, report: EraseReport, actor: str, now: datetime
) -> set[str]:
    """Every database change of one erasure; the blobs it stopped referring to."""
    messages = their_messages(session, address, sent_alone=True)
    removed_per_case: dict[int, int] = {}
    for m in messages:
        if m.case_id is not None:
            removed_per_case[m.case_id] = removed_per_case.get(m.case_id, 0) + 1
    cases = their_cases(session, address, set(removed_per_case))
    ids = [m.id for m in messages]
    candidates = message_blobs(session, ids)
    session.expunge_all()  # rows below change by bulk statements
    forget_messages(session, ids)
    quarantined = their_quarantine(session, address)
    for entry in quarantined:
        candidates |= quarantined_blobs(blobs, entry.raw_sha256)
    q_ids = [e.id for e in quarantined]
    if q_ids:
        session.execute(delete(QuarantineEntry).where(QuarantineEntry.id.in_(q_ids)))
    participants: Any = session.execute(
        delete(CaseParticipant).where(func.lower(CaseParticipant.address) == address)
    )
    outbox: Any = session.execute(
        delete(OutboxItem).where(func.lower(OutboxItem.rcpt_to) == address)
    )
    session.execute(
        delete(SuppressedRecipient).where(func.lower(SuppressedRecipient.address) == address)
    )
    session.execute(
        update(Case)
        .where(func.lower(Case.customer) == address)
        .values(customer="", customer_name="")
    )
    changed = scrub_columns(session, address)
    report.rows_rewritten = sum(len(keys) for keys in changed.values())
    mentioned = {int(k[0]) for k in changed.get("messages", set())}
    report.blobs_rewritten, old = _redact_blobs(session, blobs, address, cases, mentioned)
    candidates |= old
    for (entry_id,) in changed.get("quarantine", set()):
        candidates |= _redact_quarantine(session, blobs, address, int(entry_id), report)
    _redact_outbox(session, address)
    _reindex_terms(session, {int(k[0]) for k in changed.get("cases", set())})
    _tombstones(session, sorted(cases), removed_per_case, actor, now)
    report.messages = len(ids)
    report.cases = sorted(cases)
    report.participants = int(participants.rowcount or 0)
    report.quarantine_entries = len(q_ids)
    report.outbox_items = int(outbox.rowcount or 0)
    return candidates


# Outbox rows read at a time while looking for the address in their bytes.
OUTBOX_BATCH = 200


def _redact_blobs(
    session: Session, blobs: BlobStore, address: str, cases: set[int], mentioned: set[int]
) -> tuple[int, set[str]]:
    """Rewrite the address in the raw and attachment blobs of the messages left on
    ``cases`` and of messages ``mentioned``; (blobs rewritten, the old shas)."""
    ids = set(mentioned)
    if cases:
        ids.update(session.scalars(select(Message.id).where(Message.case_id.in_(sorted(cases)))))
    rewritten = 0
    old: set[str] = set()
    for message_id in sorted(ids):
        raw = session.execute(
            select(Message.raw_sha256).where(Message.id == message_id)
        ).scalar_one()
        new = redact_blob(blobs, raw, address)
        if new is not None:
            session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(raw_sha256=new[0], raw_size=new[1])
            )
            rewritten, old = rewritten + 1, old | {raw}
        attachments = session.execute(
            select(Attachment.id, Attachment.sha256).where(Attachment.message_id == message_id)
        ).all()
        for attachment_id, sha in attachments:
            new = redact_blob(blobs, sha, address)
            if new is not None:
                session.execute(
                    update(Attachment)
                    .where(Attachment.id == attachment_id)
                    .values(sha256=new[0], size=new[1])
                )
                rewritten, old = rewritten + 1, old | {sha}
    return rewritten, old


def _redact_quarantine(
    session: Session, blobs: BlobStore, address: str, entry_id: int, report: EraseReport
) -> set[str]:
    """Someone else's quarantined mail that mentions the address: its raw rewritten."""
    sha = session.execute(
        select(QuarantineEntry.raw_sha256).where(QuarantineEntry.id == entry_id)
    ).scalar_one()
    new = redact_blob(blobs, sha, address)
    if new is None:
        return set()
    session.execute(
        update(QuarantineEntry)
        .where(QuarantineEntry.id == entry_id)
        .values(raw_sha256=new[0], raw_size=new[1])
    )
    report.blobs_rewritten += 1
    return quarantined_blobs(blobs, sha)


def _redact_outbox(session: Session, address: str) -> None:
    """Every outbox copy (kept in the database) that names the address: on the
    person's cases and anywhere else (a reply to somebody else that Cc'd them).
    Read in batches, so the whole outbox is never in memory at once."""
    after = 0
    while True:
        rows = session.execute(
            select(OutboxItem.id, OutboxItem.raw)
            .where(OutboxItem.id > after)
            .order_by(OutboxItem.id)
            .limit(OUTBOX_BATCH)
        ).all()
        if not rows:
            return
        for item_id, raw in rows:
            new = redact_bytes(bytes(raw or b""), address)
            if new is not None:
                session.execute(update(OutboxItem).where(OutboxItem.id == item_id).values(raw=new))
        after = rows[-1][0]


def _reindex_terms(session: Session, case_ids: set[int]) -> None:
    """Cases whose subject named the person: their topic terms worked out again."""
    for case_id in sorted(case_ids):
        case = session.execute(
            select(Case.subject, Case.created_at).where(Case.id == case_id)
        ).one()
        session.execute(delete(CaseTerm).where(CaseTerm.case_id == case_id))
        index_case(session, case_id, case.subject, case.created_at)


def _tombstones(
    session: Session, cases: list[int], removed: dict[int, int], actor: str, now: datetime
) -> None:
    """One ``contact.erased`` event per case, and a new version (the API's ETag)."""
    if not cases:
        return
    session.execute(
        update(Case).where(Case.id.in_(cases)).values(version=Case.version + 1, updated_at=now)
    )
    events = [(case, TOMBSTONE, {"messages_removed": removed.get(case, 0)}) for case in cases]
    record_many(session, events, actor, now)
