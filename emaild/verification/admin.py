"""What ``emaild address`` does, as functions of an ``App`` (the CLI only prints)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic, sleep
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from emaild.addresses import AddressEntry, IgnoredRow, managed_row
from emaild.clock import utcnow
from emaild.errors import InputError
from emaild.outbox import QUEUED, enqueue
from emaild.store.models import ManagedAddress, Message, OutboxItem, VerificationToken
from emaild.verification.outgoing import verification_message
from emaild.verification.release import Released, held_counts
from emaild.verification.state import mark_verified
from emaild.verification.tokens import VERIFY, TokenCheck, issue, use

if TYPE_CHECKING:
    from emaild.app import App


def utc_now(app: App) -> datetime:
    return app.pipeline.clock()


# --- reading ---------------------------------------------------------------------------
def address_info(app: App, address: str) -> dict[str, Any]:
    """Everything ``emaild address show`` prints, as JSON-ready data."""
    book = app.pipeline.addresses
    book.invalidate()
    wanted = address.strip().lower()
    entry = book.entry(wanted)
    ignored = [r for r in book.ignored() if r.address == wanted]
    if entry is None and not ignored:
        raise InputError(f"no routing address {wanted} (see 'emaild address list')")
    with app.db.session() as session:
        if entry is not None:
            info = _entry_json(session, entry)
            if ignored:
                info["shadowed_row"] = ignored[0].reason
            return info
        return _ignored_json(session, ignored[0])


def list_addresses(app: App) -> list[dict[str, Any]]:
    """Every routing address in use, then managed rows that are not (and why)."""
    book = app.pipeline.addresses
    book.invalidate()
    with app.db.session() as session:
        rows = [_entry_json(session, e) for e in book.entries()]
        rows += [_ignored_json(session, r) for r in book.ignored()]
    return rows


def _entry_json(session: Session, entry: AddressEntry) -> dict[str, Any]:
    r = entry.routing
    via, verified_at = "config", None
    if entry.source == "database":
        via, verified_at = _verified_via(session, r.address), entry.verified_at
    return {
        "address": r.address,
        "name": r.name,
        "aliases": list(r.aliases),
        "source": entry.source,
        "in_use": True,
        "problem": "",
        "enabled": r.enabled,
        "verified": entry.verified,
        "verified_at": verified_at.isoformat() if verified_at else None,
        "verified_via": via if entry.verified else "",
        "held_messages": held_counts(session).get(r.address, 0),
        "pending_tokens": _pending_tokens(session, r.address),
        "settings": r.model_dump(mode="json"),
    }


def _ignored_json(session: Session, row: IgnoredRow) -> dict[str, Any]:
    managed = session.get(ManagedAddress, row.address)
    settings = dict(managed.settings or {}) if managed is not None else {}
    return {
        "address": row.address,
        "name": settings.get("name", ""),
        "aliases": list(settings.get("aliases", [])),
        "source": "database",
        "in_use": False,
        "problem": row.reason,
        "enabled": row.enabled,
        "verified": row.verified_at is not None,
        "verified_at": row.verified_at.isoformat() if row.verified_at else None,
        "verified_via": _verified_via(session, row.address) if row.verified_at else "",
        "held_messages": held_counts(session).get(row.address, 0),
        "pending_tokens": _pending_tokens(session, row.address),
        "settings": settings,
    }


def _verified_via(session: Session, address: str) -> str:
    via = session.scalars(
        select(VerificationToken.used_via)
        .where(
            VerificationToken.address == address,
            VerificationToken.purpose == VERIFY,
            VerificationToken.used_at.is_not(None),
        )
        .order_by(VerificationToken.used_at)
        .limit(1)
    ).first()
    return via or ""


def _pending_tokens(session: Session, address: str) -> int:
    return int(
        session.scalar(
            select(func.count(VerificationToken.id)).where(
                VerificationToken.address == address,
                VerificationToken.purpose == VERIFY,
                VerificationToken.used_at.is_(None),
            )
        )
        or 0
    )


# --- verifying -------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """What the relay did with a queued message, right after a delivery attempt."""

    outbox_id: int
    status: str  # queued (will be retried), sent, failed
    attempts: int
    error: str
    message_id: str


@dataclass(frozen=True)
class VerificationRequest:
    address: str
    outbox_id: int
    message_id: str
    expires_at: datetime


def request_verification(app: App, address: str) -> VerificationRequest:
    """Queue a verification message with a fresh token for a managed address."""
    book = app.pipeline.addresses
    book.invalidate()
    entry = book.entry(address)
    if entry is None:
        with app.db.session() as session:
            managed_row(session, app.config, address)  # raises with the reason
        raise InputError(f"{address} is not in use (see 'emaild address list')")
    if entry.source == "config":
        raise InputError(
            f"{entry.address} is declared in the config file and counts as verified; "
            f"nothing to send (check forwarding with 'emaild address test-forwarding "
            f"{entry.address}')"
        )
    routing = entry.routing
    now = utc_now(app)
    ttl = timedelta(hours=app.config.verification.token_ttl_hours)
    signer = app.services.signer

    def work(session: Session) -> VerificationRequest:
        token, row = issue(
            session,
            app.services.tokens,
            address=routing.address,
            purpose=VERIFY,
            now=now,
            ttl=ttl,
        )
        message = verification_message(
            routing,
            token,
            now=now,
            expires=row.expires_at,
            domain=signer.domain_for(routing.address),
        )
        item = enqueue(
            session,
            message,
            mail_from=routing.address,
            rcpt_to=routing.address,
            now=now,
            kind="verification",
        )
        return VerificationRequest(routing.address, item.id, item.message_id, row.expires_at)

    return app.db.run(work)


def deliver_now(app: App, outbox_id: int) -> Delivery:
    """Try the outbox now (as ``emaild outbox flush`` does) and report on one item.

    A daemon's outbox (this process's or another's) may have claimed the item
    first: its attempt is then under way, and the answer is that attempt's
    outcome, waited for up to the relay's timeout, not the state before it.
    """
    from emaild.outbox import deliver_due

    deliver_due(app)
    deadline = monotonic() + app.config.relay.timeout_seconds
    while True:
        with app.db.session() as session:
            item = session.get(OutboxItem, outbox_id)
            if item is None:
                raise InputError(f"outbox item {outbox_id} vanished")
            delivery = Delivery(
                item.id, item.status, item.attempts, item.last_error, item.message_id
            )
            # Claims are written on the deliverers' clock, which is the real one.
            in_flight = item.status == QUEUED and (
                item.claimed_until is not None and item.claimed_until >= utcnow()
            )
        if not in_flight or monotonic() >= deadline:
            return delivery
        sleep(0.05)


@dataclass(frozen=True)
class Confirmation:
    address: str
    check: TokenCheck
    newly_verified: bool
    released: list[Released]


def confirm(app: App, address: str, token: str) -> Confirmation:
    """Verify ``address`` with a token from its verification mail, then release held mail."""
    now = utc_now(app)
    signer = app.services.tokens

    def work(session: Session) -> tuple[str, TokenCheck, bool]:
        row = managed_row(session, app.config, address)
        check = use(
            session, signer, token, now=now, via="confirm", address=row.address, purpose=VERIFY
        )
        newly = check.ok and mark_verified(session, row.address, now)
        return row.address, check, newly

    canonical, check, newly = app.db.run(work)
    if not check.ok:
        raise InputError(f"{canonical} not verified: token is {check.verdict.value}")
    app.pipeline.addresses.invalidate()
    released = app.pipeline.release_held(canonical)
    return Confirmation(canonical, check, newly, released)


# --- removing --------------------------------------------------------------------------
def remove_address(app: App, address: str, *, force: bool) -> tuple[str, int]:
    """Delete a managed address and its unused tokens; returns (address, held count).

    Refuses while mail is held for it, unless ``force``: that mail then stays
    held (raw kept) until the address comes back and is verified.
    """

    def work(session: Session) -> tuple[str, int]:
        row = managed_row(session, app.config, address)
        held = int(
            session.scalar(
                select(func.count(Message.id)).where(
                    Message.state == "held", Message.routing_address == row.address
                )
            )
            or 0
        )
        if held and not force:
            raise InputError(
                f"{held} message(s) are held for {row.address}; verify it to release them "
                "into cases, or pass --force to remove it anyway (they stay held)"
            )
        session.execute(
            delete(VerificationToken).where(
                VerificationToken.address == row.address, VerificationToken.used_at.is_(None)
            )
        )
        session.delete(row)
        return row.address, held

    result = app.db.run(work)
    app.pipeline.addresses.invalidate()
    return result
