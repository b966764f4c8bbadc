"""The Message-IDs of the original message a bounce, DSN or report carries.

Standard reports (RFC 3464, RFC 6533) attach the original as ``message/rfc822``
/ ``message/global`` or its header as ``text/rfc822-headers`` /
``message/global-headers``. Many MTAs (qmail, older Exim and Sendmail, some
Exchange) paste it into a text part instead, often with broken MIME, so the
body is also scanned for header lines; structured finds come first.
"""

from __future__ import annotations

import email
import re
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32

# Reports are small; the original's header sits near the top. Bounding the
# scan keeps a 35 MB "bounce" with a huge attachment cheap.
SCAN_BYTES = 512 * 1024
MAX_IDS = 20

_MSGID = re.compile(r"<([^<>\s]+)>")
_BODY_MSGID = re.compile(
    rb"^[ \t]*(?:x-original-message-id|original-message-id|message-id)[ \t]*:"
    rb"[ \t]*(?:\r?\n[ \t]+)?<([^<>\s]{1,900})>",
    re.IGNORECASE | re.MULTILINE,
)
_EMBEDDED = ("message/rfc822", "message/global")
_EMBEDDED_HEADERS = ("text/rfc822-headers", "message/global-headers")


def embedded_message_ids(raw: bytes) -> list[str]:
    """Message-IDs (``<...>``) of the original message(s) inside a report, outermost first."""
    head = raw[:SCAN_BYTES]
    found: list[str] = []
    for value in _structured_ids(head) + _scanned_ids(head):
        if value not in found:
            found.append(value)
    return found[:MAX_IDS]


def _structured_ids(raw: bytes) -> list[str]:
    message = email.message_from_bytes(raw, policy=compat32)
    out: list[str] = []
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype in _EMBEDDED:
            payload = part.get_payload()
            inner = payload if isinstance(payload, list) else []
            out += [m for sub in inner if isinstance(sub, EmailMessage) for m in _ids(sub)]
        elif ctype in _EMBEDDED_HEADERS:
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                out += _ids(BytesHeaderParser(policy=compat32).parsebytes(data.lstrip()))
    return out


def _ids(message: EmailMessage) -> list[str]:
    value = str(message.get("message-id") or "")
    return [f"<{m}>" for m in _MSGID.findall(value)][:1]


def _scanned_ids(raw: bytes) -> list[str]:
    # The report's own header comes first and is not the original's: skip it.
    end = re.search(rb"\r?\n\r?\n", raw)
    body = raw[end.end() :] if end else b""
    return [f"<{m.decode('utf-8', 'replace')}>" for m in _BODY_MSGID.findall(body)]
