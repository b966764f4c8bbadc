"""Whether a routing address is verified, read inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.addresses import AddressBook
from emaild.store.models import ManagedAddress
from emaild.webhooks.outbox import publish


def verified_in_session(session: Session, book: AddressBook, address: str) -> bool:
    """True if ``address`` is verified now, by the database, not the book's cache.

    Config addresses are verified by definition. For a managed one the row is
    read with a shared lock (PostgreSQL ``FOR SHARE``; SQLite serialises
    writers anyway), so a concurrent ``confirm`` either commits first and is
    seen, or waits for this transaction and then releases what it held.
    """
    entry = book.entry(address)
    if entry is not None and entry.source == "config":
        return True
    row = session.scalars(
        select(ManagedAddress)
        .where(ManagedAddress.address == address.lower())
        .with_for_update(read=True)
    ).first()
    return row is not None and row.verified_at is not None


def mark_verified(session: Session, address: str, now: datetime) -> bool:
    """Record that ``address`` is verified (and the ``address.verified`` webhook event);
    True if it was not before.

    Config addresses have no row and need none: they count as verified.
    """
    row = session.scalars(
        select(ManagedAddress).where(ManagedAddress.address == address.lower()).with_for_update()
    ).first()
    if row is None or row.verified_at is not None:
        return False
    row.verified_at = now
    # Webhooks hear of it in this same transaction (emaild.webhooks).
    publish(
        session,
        "address.verified",
        {"address": row.address, "verified_at": now.isoformat()},
        now,
        addresses=[row.address],
    )
    return True
