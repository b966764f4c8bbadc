"""Notices to senders whose message was not received (beside the auto-responses).

Today one: the "too large" notice, for an IMAP message over
``limits.max_message_bytes`` that was never downloaded. Only its headers are
known, and it goes through the same loop protection as an auto-response.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from sqlalchemy.orm import Session

from emaild.addresses import AddressBook
from emaild.classify import LOOP_HEADER, classify
from emaild.clock import utcnow
from emaild.errors import InputError
from emaild.mime.parse import ParsedMessage, parse_message
from emaild.outbox.queue import enqueue, is_suppressed
from emaild.quarantine import HEADER_KEEP_BYTES
from emaild.text import one_line

# How much of the sender's subject the notice repeats.
SUBJECT_CHARS = 200


def too_large_notice(
    parsed: ParsedMessage, *, from_address: str, size: int, limit: int, domain: str, now: datetime
) -> EmailMessage:
    """The "your message was too large" notice, marked as an automatic reply (RFC 3834)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = from_address
    msg["To"] = parsed.from_addr
    subject = one_line(parsed.subject, SUBJECT_CHARS) or "(no subject)"
    msg["Subject"] = f"Message not received: too large ({subject})"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("emaild.too-large", domain=domain)
    if parsed.message_id:
        msg["In-Reply-To"] = f"<{parsed.message_id}>"
        msg["References"] = f"<{parsed.message_id}>"
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg[LOOP_HEADER] = from_address
    mib = 1024 * 1024
    sent = f", sent {format_datetime(parsed.date)}" if parsed.date else ""
    msg.set_content(
        f"Your message to {from_address} with the subject\n\n    {subject}\n\n"
        f"was not received{sent}: it is {size / mib:.1f} MB and we accept messages "
        f"up to {limit / mib:.1f} MB.\n\nPlease send it again with smaller or fewer "
        "attachments, or share large files as a link.\n\nThis is an automatic notice; "
        "it is sent once for this message.\n"
    )
    return msg


def queue_too_large_notice(
    session: Session,
    headers: bytes,
    *,
    size: int,
    limit: int,
    book: AddressBook,
    routing_address: str,
    domain: str,
) -> str:
    """Queue the "too large" notice for the message with ``headers`` in ``session``,
    unless loop protection says no; says which."""
    try:
        parsed = parse_message(headers + b"\r\n", spool_threshold=HEADER_KEEP_BYTES)
    except InputError as exc:
        return f"no notice: headers unreadable ({exc})"
    return_path = parsed.header("return-path")
    mail_from = return_path.strip().strip("<>").strip() if return_path is not None else None
    reason = classify(parsed, mail_from).no_response_reason()
    recipient = parsed.from_addr.lower()
    if reason:
        return f"no notice: {reason}"
    if not recipient or "@" not in recipient:
        return "no notice: no sender address"
    if book.lookup(recipient) is not None:
        return f"no notice: {recipient} is one of our own addresses"
    suppressed = is_suppressed(session, recipient)
    if suppressed:
        return f"no notice: {recipient} is suppressed ({suppressed})"
    sender = _our_address(book, routing_address, parsed)
    notice = too_large_notice(
        parsed,
        from_address=sender,
        size=size,
        limit=limit,
        domain=domain or sender.rpartition("@")[2],
        now=utcnow(),
    )
    # Envelope sender as for auto-responses: a bounce comes back and suppresses the address.
    enqueue(session, notice, mail_from=sender, rcpt_to=recipient, now=utcnow(), kind="too_large")
    return f"sender {recipient} told"


def _our_address(book: AddressBook, routing_address: str, parsed: ParsedMessage) -> str:
    """The routing address the message was sent to (the mailbox's own first)."""
    for candidate in [routing_address] + [a.addr for a in parsed.to + parsed.cc]:
        routing = book.lookup(candidate) if candidate else None
        if routing is not None:
            return routing.address
    return book.default().address
