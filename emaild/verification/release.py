"""Releasing held mail into cases once its routing address is verified.

Each held message runs through the whole pipeline again, oldest first, so a
follow-up threads onto the case its predecessor opened and the sender gets the
auto-response they would have got on arrival. The ``verify`` stage swaps the
held row for the processed message in one transaction, so a crash mid-way
leaves the message held (and released on the next pass), never lost or doubled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import func, select

from emaild.addresses import AddressBook
from emaild.component import PeriodicJob
from emaild.errors import EmaildError
from emaild.intake import Envelope, Ingest, IngestResult
from emaild.store.blobs import BlobStore
from emaild.store.database import Database
from emaild.store.models import ManagedAddress, Message

log = structlog.get_logger("emaild.verification")

HELD = "held"
# Held messages released right after a verification arrives; the rest are
# released by the daemon's release job, so a big backlog never delays the
# answer to the channel that delivered the verification mail.
INLINE_RELEASE_LIMIT = 100
# The daemon's safety net: held mail of verified addresses that the inline
# release did not get to (a crash right after verification, a big backlog).
RELEASE_JOB_SECONDS = 60.0


@dataclass(frozen=True)
class Released:
    """One held message run through the pipeline again."""

    held_row: int
    outcome: str
    case_number: int | None
    detail: str = ""


def held_counts(session: Any) -> dict[str, int]:
    """Held messages per routing address."""
    rows = session.execute(
        select(Message.routing_address, func.count(Message.id))
        .where(Message.state == HELD)
        .group_by(Message.routing_address)
    )
    return {str(address): int(n) for address, n in rows}


def _verified_addresses(db: Database, book: AddressBook) -> set[str]:
    """Addresses verified now, by the database (the book's cache may be stale)."""
    book.invalidate()
    verified = {e.address for e in book.entries() if e.source == "config"}
    with db.session() as session:
        verified |= set(
            session.scalars(
                select(ManagedAddress.address).where(ManagedAddress.verified_at.is_not(None))
            )
        )
    return verified


def release_held(
    ingest: Ingest,
    db: Database,
    blobs: BlobStore,
    book: AddressBook,
    address: str | None = None,
    *,
    limit: int | None = None,
) -> list[Released]:
    """Run held mail of verified addresses (or just ``address``) through ``ingest``.

    Oldest first; at most ``limit`` messages. Messages of addresses that are
    still unverified are left alone. One message failing (quarantined, or its
    raw blob missing) does not stop the others.
    """
    with db.session() as session:
        waiting = set(held_counts(session))
    if address is not None:
        waiting &= {address.lower()}
    verified = waiting & _verified_addresses(db, book) if waiting else set()
    if not verified:
        return []
    query = (
        select(
            Message.id,
            Message.raw_sha256,
            Message.channel,
            Message.envelope_from,
            Message.envelope_to,
            Message.routing_address,
        )
        .where(Message.state == HELD, Message.routing_address.in_(sorted(verified)))
        .order_by(Message.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with db.session() as session:
        rows = list(session.execute(query))
    released: list[Released] = []
    for row_id, sha, channel, mail_from, rcpt_to, routing in rows:
        if not blobs.exists(sha):
            log.error("verification.release_missing_raw", held_row=row_id, raw_sha256=sha)
            released.append(Released(row_id, "missing", None, f"raw message {sha} is missing"))
            continue
        envelope = Envelope(
            channel=channel or "release",
            mail_from=mail_from,
            rcpt_to=tuple(rcpt_to or ()),
            routing_hint=routing,
        )
        try:
            result: IngestResult = ingest(blobs.read(sha), envelope)
        except EmaildError as exc:
            # Storage trouble: stop here; what is left stays held for the next pass.
            log.warning("verification.release_stopped", held_row=row_id, error=str(exc))
            break
        released.append(Released(row_id, result.outcome.value, result.case_number, result.detail))
        log.info(
            "verification.released",
            held_row=row_id,
            outcome=result.outcome.value,
            case=result.case_number,
        )
    return released


def release_job(release: Callable[[], object]) -> PeriodicJob:
    """Daemon component: releases held mail of verified addresses every minute."""
    return PeriodicJob("verification.release", release, RELEASE_JOB_SECONDS)
