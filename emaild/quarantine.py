"""Quarantine: messages kept raw with the error that stopped them (contract 3).

This module is the one writer and reader of quarantine rows: the pipeline
(a stage failed, or a rule or accept-from said "quarantine"), the IMAP
channel (a message too large to download, or not mail at all) and the
operator's ``emaild quarantine`` commands all go through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.errors import InputError
from emaild.intake import Envelope, IngestResult, Outcome
from emaild.store.blobs import BlobStore
from emaild.store.database import Database
from emaild.store.models import QuarantineEntry
from emaild.webhooks.outbox import publish

HELD = "held"
RELEASED = "released"
# How much of a message's header block an entry keeps for ``quarantine show``.
HEADER_KEEP_BYTES = 16384
ERROR_KEEP_CHARS = 10000
# A quarantine entry is the last resort for keeping a message: retry a busy database.
ATTEMPTS = 3


@dataclass(frozen=True)
class Held:
    """What to keep of a message that cannot become a case now."""

    channel: str
    reason: str  # error, rule, accept_from, auth, unusable, too_large
    stage: str
    error: str
    raw_sha256: str = ""  # empty: the raw bytes were never fetched (too large)
    raw_size: int = 0
    headers: str = ""
    envelope_from: str = ""
    envelope_to: tuple[str, ...] = ()


def header_block(raw: bytes) -> str:
    """The message's header block (at most ``HEADER_KEEP_BYTES``), as text."""
    end = raw.find(b"\r\n\r\n")
    if end == -1:
        end = raw.find(b"\n\n")
    block = raw[: end if end != -1 else HEADER_KEEP_BYTES][:HEADER_KEEP_BYTES]
    return block.decode("utf-8", "replace")


def find_held(session: Session, *conditions: Any) -> QuarantineEntry | None:
    """The first held entry matching ``conditions``."""
    query = select(QuarantineEntry).where(QuarantineEntry.status == HELD, *conditions)
    return session.scalars(query.limit(1)).first()


def add(session: Session, held: Held, now: datetime) -> QuarantineEntry:
    """A new held entry for ``held`` in ``session`` (flushed: it has its id)."""
    entry = QuarantineEntry(
        created_at=now,
        channel=held.channel,
        envelope_from=held.envelope_from,
        envelope_to=list(held.envelope_to),
        raw_sha256=held.raw_sha256,
        raw_size=held.raw_size,
        reason=held.reason,
        stage=held.stage,
        error=held.error[:ERROR_KEEP_CHARS],
        status=HELD,
        attempts=1,
        last_attempt_at=now,
        headers=held.headers,
    )
    session.add(entry)
    session.flush()
    # A new entry (not a repeat of a held one) is a webhook event, in this transaction.
    publish(
        session,
        "quarantine.added",
        {
            "quarantine": {
                "id": entry.id,
                "reason": entry.reason,
                "stage": entry.stage,
                "error": entry.error[:500],
                "channel": entry.channel,
                "envelope_from": entry.envelope_from,
                "envelope_to": list(entry.envelope_to)[:50],
                "raw_size": entry.raw_size,
                "links": {"list": "/api/v1/quarantine"},
            }
        },
        now,
        addresses=held.envelope_to,
    )
    return entry


def count_attempt(entry: QuarantineEntry, now: datetime) -> None:
    """The same message was kept again (a retry, a re-poll): one entry, one more attempt."""
    entry.attempts += 1
    entry.last_attempt_at = now


def hold(session: Session, held: Held, now: datetime) -> int:
    """Keep ``held`` in ``session``; the same held raw bytes are one entry, counted again."""
    if held.raw_sha256:
        existing = find_held(session, QuarantineEntry.raw_sha256 == held.raw_sha256)
        if existing is not None:
            count_attempt(existing, now)
            existing.error = held.error[:ERROR_KEEP_CHARS]
            existing.stage = held.stage
            return existing.id
    return add(session, held, now).id


def set_reason(db: Database, entry_id: int, reason: str, error: str) -> None:
    """A held entry now waits for something else (a web submission confirmed, over its cap)."""

    def work(session: Session) -> None:
        entry = session.get(QuarantineEntry, entry_id)
        if entry is not None and entry.status == HELD:
            entry.reason = reason
            entry.error = error[:ERROR_KEEP_CHARS]

    db.run(work, attempts=ATTEMPTS)


def record(
    db: Database, held: Held, now: datetime, *, also: Callable[[Session], None] | None = None
) -> int:
    """``hold`` in a transaction of its own; ``also`` runs in it (an IMAP cursor moves on)."""

    def work(session: Session) -> int:
        if also is not None:
            also(session)
        return hold(session, held, now)

    return db.run(work, attempts=ATTEMPTS)


# --- reading and retrying -------------------------------------------------------------
def entry_json(e: QuarantineEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "created_at": e.created_at.isoformat(),
        "channel": e.channel,
        "envelope_from": e.envelope_from,
        "envelope_to": list(e.envelope_to or []),
        "raw_sha256": e.raw_sha256,
        "raw_size": e.raw_size,
        "reason": e.reason,
        "stage": e.stage,
        "error": e.error,
        "status": e.status,
        "attempts": e.attempts,
        "message_row": e.message_row_id,
    }


def list_entries(db: Database, status: str | None = HELD) -> list[dict[str, Any]]:
    with db.session() as session:
        query = select(QuarantineEntry).order_by(QuarantineEntry.id)
        if status:
            query = query.where(QuarantineEntry.status == status)
        return [entry_json(e) for e in session.scalars(query)]


def get_entry(db: Database, entry_id: int) -> QuarantineEntry | None:
    with db.session() as session:
        return session.get(QuarantineEntry, entry_id)


class Reingest(Protocol):
    """What ``retry`` needs of the pipeline."""

    @property
    def db(self) -> Database: ...

    @property
    def blobs(self) -> BlobStore: ...

    def ingest(self, raw: bytes, envelope: Envelope) -> IngestResult: ...

    def clock(self) -> datetime: ...


def retry(pipeline: Reingest, entry_id: int, *, release: bool = False) -> IngestResult:
    """Run a held message through the pipeline again (after a fix).

    With ``release`` the operator overrides a policy quarantine (a rule's or
    accept-from's): the message goes through every stage except that quarantine.
    """
    entry = get_entry(pipeline.db, entry_id)
    if entry is None:
        raise InputError(f"no quarantine entry {entry_id}")
    if entry.status != HELD:
        raise InputError(f"quarantine entry {entry_id} is {entry.status}, not held")
    if not entry.raw_sha256 or not pipeline.blobs.exists(entry.raw_sha256):
        raise InputError(
            f"quarantine entry {entry_id} has no stored raw message (it was too large to fetch)"
        )
    raw = pipeline.blobs.read(entry.raw_sha256)
    # Not a live SMTP session any more: a policy "reject" now keeps the raw mail
    # (state dropped) instead of refusing it, so nothing held is ever lost.
    envelope = Envelope(
        channel="quarantine",
        release=release,
        mail_from=entry.envelope_from,
        rcpt_to=tuple(entry.envelope_to or ()),
        routing_hint=(entry.envelope_to or [""])[0],
    )
    result = pipeline.ingest(raw, envelope)
    if result.outcome is not Outcome.QUARANTINED or result.quarantine_id != entry_id:

        def mark_released(session: Session) -> None:
            row = session.get(QuarantineEntry, entry_id)
            assert row is not None
            row.status = RELEASED
            row.message_row_id = result.message_row_id
            row.last_attempt_at = pipeline.clock()

        pipeline.db.run(mark_released)
    return result
