"""The notice telling a sender their message was too large to be received."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from emaild.classify import LOOP_HEADER
from emaild.mime.parse import ParsedMessage


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def too_large_notice(
    parsed: ParsedMessage, *, from_address: str, size: int, limit: int, domain: str, now: datetime
) -> EmailMessage:
    """The "your message was too large" notice, marked as an automatic reply (RFC 3834)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = from_address
    msg["To"] = parsed.from_addr
    subject = _one_line(parsed.subject) or "(no subject)"
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
