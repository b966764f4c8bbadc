"""The RFC 5322 message emaild builds from a web submission.

From is the person who filled the form, To the form's routing address; the
body is the description, then the form's own fields; attachments are MIME
parts, byte for byte. The Message-ID is derived from the form and the
submission's digest, so a double submit is the same message and the
pipeline's deduplication keeps it to one case.
"""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from emaild.config import WebformConfig
from emaild.outbox.queue import WIRE_POLICY
from emaild.text import one_line
from emaild.webform import stamp
from emaild.webform.submission import Submission


def message_id(form: WebformConfig, submission: Submission, domain: str) -> str:
    return f"<web.{form.name}.{submission.digest(form.name)}@{domain}>"


def body_text(form: WebformConfig, submission: Submission) -> str:
    lines = [submission.description or submission.subject, ""]
    labels = {f.name: f.label or f.name for f in form.fields}
    extra = [f"{labels[k]}: {v}" for k, v in submission.custom.items()]
    if extra:
        lines += ["--", *extra, ""]
    return "\n".join(lines)


def build(
    form: WebformConfig,
    submission: Submission,
    *,
    msgid: str,
    now: datetime,
    secret: bytes,
    fields: dict[str, Any],
    defences: dict[str, Any],
) -> bytes:
    """The message's raw bytes (CRLF, as on the wire)."""
    msg = EmailMessage()
    try:
        sender = Address(display_name=submission.name, addr_spec=submission.email)
    except (ValueError, IndexError):
        sender = Address(addr_spec=submission.email)
    msg["From"] = sender
    msg["To"] = form.address
    msg["Subject"] = one_line(submission.subject or submission.description, 300)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = msgid
    msg[stamp.HEADER] = stamp.make(secret, form.name, fields, defences)
    msg.set_content(body_text(form, submission))
    for upload in submission.attachments:
        maintype, _, subtype = upload.content_type.partition("/")
        msg.add_attachment(
            upload.data, maintype=maintype, subtype=subtype, filename=upload.filename
        )
    return msg.as_bytes(policy=WIRE_POLICY)
