"""The database schema as typed SQLAlchemy 2 models.

Every table the daemon uses is importable from here (the webhook tables are
defined in ``emaild.store.webhook_models``, the lock holders in
``emaild.store.cluster_models``, re-exported below); the
Alembic migrations in ``migrations/versions`` must match it (a test checks).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from emaild.store.base import NAMING, Base, UTCDateTime
from emaild.store.blob_models import BlobChunk, BlobRow
from emaild.store.cluster_models import ClusterHolder
from emaild.store.safetext import SafeString, SafeText
from emaild.store.webhook_models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)

__all__ = [
    "NAMING",
    "Base",
    "BlobChunk",
    "BlobRow",
    "ClusterHolder",
    "UTCDateTime",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookSubscription",
]


class Case(Base):
    """A support case. Its ``id`` is the case number customers see."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(SafeText(), default="")
    status: Mapped[str] = mapped_column(SafeString(16), default="new", index=True)
    priority: Mapped[str] = mapped_column(SafeString(16), default="Medium")
    origin: Mapped[str] = mapped_column(SafeString(64), default="Email")
    owner: Mapped[str] = mapped_column(SafeString(255), default="")
    category: Mapped[str] = mapped_column(SafeString(255), default="")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    routing_address: Mapped[str] = mapped_column(SafeString(320), index=True)
    customer: Mapped[str] = mapped_column(SafeString(320), default="", index=True)
    customer_name: Mapped[str] = mapped_column(SafeText(), default="")
    # Indexed: a reply to a closed case looks for an open follow-up linked to it.
    linked_case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id"), default=None, index=True
    )
    mentioned_number: Mapped[int | None] = mapped_column(Integer, default=None)
    loop_count: Mapped[int] = mapped_column(Integer, default=0)
    auto_responses: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    closed_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    # Bumped by every change through emaild.casework: the API's ETag, and the
    # compare-and-set that keeps two agents from overwriting each other.
    version: Mapped[int] = mapped_column(Integer, default=1)

    messages: Mapped[list[Message]] = relationship(
        back_populates="case", order_by="Message.id", foreign_keys="Message.case_id"
    )
    participants: Mapped[list[CaseParticipant]] = relationship(
        back_populates="case", cascade="all, delete-orphan"
    )


class CaseParticipant(Base):
    """An address that took part in a case (customer, cc); gates bare case numbers."""

    __tablename__ = "case_participants"
    __table_args__ = (UniqueConstraint("case_id", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(SafeString(320), index=True)
    role: Mapped[str] = mapped_column(SafeString(16), default="customer")

    case: Mapped[Case] = relationship(back_populates="participants")


class Message(Base):
    """One inbound or outbound email, stored once however often it arrives."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_fingerprint_received", "fingerprint", "received_at"),
        # Threading asks for the newest case of an Outlook conversation:
        # max(case_id) for one thread_index is one probe of this index.
        Index("ix_messages_thread_index_case_id", "thread_index", "case_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True, default=None)
    direction: Mapped[str] = mapped_column(SafeString(3), default="in")
    # held: accepted but not (yet) a case, e.g. unverified address; stored: on a case;
    # dropped: a rule dropped it (raw kept); quarantined: see the quarantine table;
    # flagged: on a case, from a stranger to it (emaild.correlation.strangers).
    state: Mapped[str] = mapped_column(SafeString(16), default="stored", index=True)
    dedup_key: Mapped[str] = mapped_column(SafeString(1024), unique=True)
    message_id: Mapped[str] = mapped_column(SafeString(998), default="", index=True)
    in_reply_to: Mapped[str] = mapped_column(SafeText(), default="")
    references: Mapped[list[Any]] = mapped_column(default=list)
    thread_index: Mapped[str] = mapped_column(SafeString(64), default="")
    from_addr: Mapped[str] = mapped_column(SafeString(320), default="")
    from_name: Mapped[str] = mapped_column(SafeText(), default="")
    reply_to: Mapped[str] = mapped_column(SafeString(320), default="")
    to: Mapped[list[Any]] = mapped_column(default=list)
    cc: Mapped[list[Any]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(SafeText(), default="")
    text: Mapped[str] = mapped_column(SafeText(), default="")
    html: Mapped[str] = mapped_column(SafeText(), default="")
    new_text: Mapped[str] = mapped_column(SafeText(), default="")
    headers: Mapped[list[Any]] = mapped_column(default=list)
    # Empty once retention removed the raw bytes (emaild.privacy.retention).
    raw_sha256: Mapped[str] = mapped_column(SafeString(64), index=True)
    raw_size: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(SafeString(32), default="")
    envelope_from: Mapped[str] = mapped_column(SafeString(320), default="")
    envelope_to: Mapped[list[Any]] = mapped_column(default=list)
    routing_address: Mapped[str] = mapped_column(SafeString(320), default="")
    is_auto: Mapped[bool] = mapped_column(Boolean, default=False)
    is_bounce: Mapped[bool] = mapped_column(Boolean, default=False)
    fingerprint: Mapped[str] = mapped_column(SafeString(64), default="")
    defects: Mapped[list[Any]] = mapped_column(default=list)
    decision_trace: Mapped[list[Any]] = mapped_column(default=list)
    date: Mapped[datetime | None] = mapped_column(default=None)
    received_at: Mapped[datetime]

    case: Mapped[Case | None] = relationship(back_populates="messages", foreign_keys=[case_id])
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="Attachment.id"
    )


class Attachment(Base):
    """A MIME leaf part stored as a blob (identical content is stored once)."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(SafeText(), default="")
    content_type: Mapped[str] = mapped_column(SafeString(255), default="application/octet-stream")
    content_id: Mapped[str] = mapped_column(SafeString(998), default="")
    disposition: Mapped[str] = mapped_column(SafeString(32), default="attachment")
    size: Mapped[int] = mapped_column(BigInteger)
    # Empty once retention removed the bytes (the row stays as a record).
    sha256: Mapped[str] = mapped_column(SafeString(64), index=True)

    message: Mapped[Message] = relationship(back_populates="attachments")


class QuarantineEntry(Base):
    """A message the pipeline could not process, kept raw with the error."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    channel: Mapped[str] = mapped_column(SafeString(32), default="")
    envelope_from: Mapped[str] = mapped_column(SafeString(320), default="")
    envelope_to: Mapped[list[Any]] = mapped_column(default=list)
    raw_sha256: Mapped[str] = mapped_column(SafeString(64), default="", index=True)
    raw_size: Mapped[int] = mapped_column(BigInteger, default=0)
    headers: Mapped[str] = mapped_column(SafeText(), default="")
    reason: Mapped[str] = mapped_column(SafeString(32), default="error")
    stage: Mapped[str] = mapped_column(SafeString(64), default="")
    error: Mapped[str] = mapped_column(SafeText(), default="")
    # held: waiting; released: retried into a case; discarded: an operator gave up.
    status: Mapped[str] = mapped_column(SafeString(16), default="held", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), default=None)


class OutboxItem(Base):
    """An outgoing message, written in the same transaction as its cause."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_next_attempt", "status", "next_attempt_at"),
        Index("ix_outbox_rcpt_created", "rcpt_to", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(SafeString(32), default="autoresponse")
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), default=None)
    in_reply_to_row: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), default=None)
    mail_from: Mapped[str] = mapped_column(SafeString(320), default="")
    rcpt_to: Mapped[str] = mapped_column(SafeString(320))
    message_id: Mapped[str] = mapped_column(SafeString(998), default="", index=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(SafeString(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str] = mapped_column(SafeText(), default="")
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    # A delivery worker's claim: while ``claimed_until`` is in the future no other
    # process may send this item; an expired claim (a crashed worker) is taken over.
    claimed_by: Mapped[str] = mapped_column(SafeString(64), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)


class SuppressedRecipient(Base):
    """An address we must not auto-respond to (marked undeliverable by a bounce)."""

    __tablename__ = "suppressed_recipients"

    address: Mapped[str] = mapped_column(SafeString(320), primary_key=True)
    reason: Mapped[str] = mapped_column(SafeText(), default="")
    created_at: Mapped[datetime]


class ImapCursor(Base):
    """Where a mailbox folder's poll got to: (UIDVALIDITY, last UID)."""

    __tablename__ = "imap_cursors"

    mailbox: Mapped[str] = mapped_column(SafeString(255), primary_key=True)
    folder: Mapped[str] = mapped_column(SafeString(255), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, default=0)
    # Every UID up to last_uid is stored (moved in the message's transaction);
    # up to acked_uid the after-store action (flag/move/delete) is done too.
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    acked_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class ChannelStatus(Base):
    """Last success/failure of each channel, for ``emaild status``."""

    __tablename__ = "channel_status"

    name: Mapped[str] = mapped_column(SafeString(255), primary_key=True)
    kind: Mapped[str] = mapped_column(SafeString(32))
    last_success_at: Mapped[datetime | None] = mapped_column(default=None)
    last_failure_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(SafeText(), default="")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    # Since when the channel fails without a success between (None: it works).
    failing_since: Mapped[datetime | None] = mapped_column(default=None)


class ChannelAlert(Base):
    """What ``emaild.alerts`` last said about a channel: kept so a restart says it once."""

    __tablename__ = "channel_alerts"

    name: Mapped[str] = mapped_column(SafeString(255), primary_key=True)
    # "failing": a failure notice went out and no recovery since; "ok" otherwise.
    state: Mapped[str] = mapped_column(SafeString(16), default="ok")
    failing_since: Mapped[datetime | None] = mapped_column(default=None)
    # The last failure notice (at most one per channel per hour).
    notified_at: Mapped[datetime | None] = mapped_column(default=None)
    changed_at: Mapped[datetime]


class OpsEvent(Base):
    """An operational event (``channel.failing``, ``channel.recovered``): ``emaild.alerts.emit``."""

    __tablename__ = "ops_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(SafeString(32), index=True)
    at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ManagedAddress(Base):
    """A routing address managed with ``emaild address`` (config ones win on conflict)."""

    __tablename__ = "routing_addresses"

    address: Mapped[str] = mapped_column(SafeString(320), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    verified_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime]


class VerificationToken(Base):
    """A single-use, expiring token (address verification, forwarding test)."""

    __tablename__ = "verification_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(SafeString(320), index=True)
    purpose: Mapped[str] = mapped_column(SafeString(32), default="verify")
    token_hash: Mapped[str] = mapped_column(SafeString(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    used_via: Mapped[str] = mapped_column(SafeString(32), default="")
    # The message that carried the token back (None: confirmed by hand, or unused).
    message_row_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), default=None)


class CaseEvent(Base):
    """One thing that happened to a case (created, message in, reply out, status,
    note...), written in the same transaction as the change; webhooks deliver them."""

    __tablename__ = "case_events"
    __table_args__ = (Index("ix_case_events_case_id_id", "case_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(SafeString(32))
    # Who: an API token's name, "cli", or "mail" for the pipeline.
    actor: Mapped[str] = mapped_column(SafeString(255), default="")
    # Indexed: reports count status changes in a period.
    at: Mapped[datetime] = mapped_column(index=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CaseTerm(Base):
    """A telling term of a case's subject (``emaild.reports.topics``), written with the
    case: the topic view counts these with SQL. ``created_at`` is the case's."""

    __tablename__ = "case_terms"
    __table_args__ = (Index("ix_case_terms_created_at_term", "created_at", "term"),)

    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    term: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    created_at: Mapped[datetime]


class ApiToken(Base):
    """An HTTP API token; only its sha256 is stored (``emaild token add``)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(SafeString(64), unique=True)
    scope: Mapped[str] = mapped_column(SafeString(8))
    token_hash: Mapped[str] = mapped_column(SafeString(64), unique=True)
    created_at: Mapped[datetime]


class IdempotencyKey(Base):
    """The first answer to a POST with an ``Idempotency-Key``, replayed for repeats.

    Written in the same transaction as the POST's change, so the unique key
    decides which of two concurrent requests does the work.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("token_name", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_name: Mapped[str] = mapped_column(SafeString(64))
    key: Mapped[str] = mapped_column(SafeString(255))
    # sha256 of method, path and body: the same key for another request is refused.
    request_hash: Mapped[str] = mapped_column(SafeString(64))
    status_code: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class WebformDay(Base):
    """Submissions a web form let through on one UTC day (its daily cap)."""

    __tablename__ = "webform_days"

    form: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    day: Mapped[str] = mapped_column(SafeString(10), primary_key=True)  # YYYY-MM-DD
    admitted: Mapped[int] = mapped_column(Integer, default=0)
