"""Build a well-formed auto-response with the stdlib ``email`` package.

Every header value that can come from a customer (names, subjects,
Message-IDs) passes through ``_one_line`` or a strict syntax check before it
reaches a header, and the stdlib's modern policy then folds and RFC 2047
encodes it; so a CR or LF in a customer's name or subject can never start a
header of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from html import escape

from emaild.autoresponse.templates import Rendered
from emaild.classify import LOOP_HEADER

# A msg-id we are willing to repeat: <printable-ASCII-without-space-or-angles>.
_MSG_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]{1,900}>$")
# An address we are willing to send to: no spaces, quotes, angles or controls.
_ADDR_SPEC = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}$")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
MAX_REFERENCES = 20

POLICY = SMTP.clone(max_line_length=78)


def _one_line(value: str, limit: int = 300) -> str:
    """Collapse control characters (CR, LF, TAB...) to spaces: one header, one line."""
    return " ".join(_CONTROLS.sub(" ", value).split())[:limit]


def usable_address(address: str) -> bool:
    """A plain ``local@domain`` we can put in RCPT TO and a header unchanged."""
    _local, _, domain = address.rpartition("@")
    return bool(_ADDR_SPEC.match(address)) and not domain.startswith(".") and ".." not in domain


def valid_msg_id(value: str) -> bool:
    return bool(_MSG_ID.match(value))


@dataclass(frozen=True)
class Reply:
    """What the auto-response answers: the customer's message, as stored."""

    to_name: str
    to_address: str
    message_id: str
    references: Sequence[str]


def compose(
    rendered: Rendered,
    *,
    from_name: str,
    from_address: str,
    reply: Reply,
    message_id: str,
    now: datetime,
    body_token: str = "",
) -> EmailMessage:
    """The auto-response as an ``EmailMessage`` ready for the outbox.

    The subject is used as rendered (the caller adds the case's tag);
    ``body_token`` is appended to each body when body tokens are on.
    """
    if not usable_address(reply.to_address):
        raise ValueError(f"recipient address not usable: {reply.to_address!r}")
    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(display_name=_one_line(from_name), addr_spec=from_address)
    msg["To"] = Address(display_name=_one_line(reply.to_name), addr_spec=reply.to_address)
    msg["Reply-To"] = Address(display_name=_one_line(from_name), addr_spec=from_address)
    msg["Subject"] = _one_line(rendered.subject, 900)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    if valid_msg_id(reply.message_id):
        msg["In-Reply-To"] = reply.message_id
    references = [r for r in reply.references if valid_msg_id(r)][-MAX_REFERENCES:]
    if valid_msg_id(reply.message_id) and reply.message_id not in references:
        references.append(reply.message_id)
    if references:
        msg["References"] = " ".join(references[-MAX_REFERENCES:])
    # RFC 3834: this is an automatic reply; Microsoft's header asks Exchange and
    # Outlook not to answer it with their own auto-replies; Precedence is the
    # older convention vacation programs still honour; the loop header marks
    # mail we sent if it ever comes back to us.
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["Precedence"] = "bulk"
    msg[LOOP_HEADER] = from_address
    text = rendered.text
    html = rendered.html
    if body_token:
        text = f"{text.rstrip()}\n\n{body_token}\n"
        if html:
            token = escape(body_token)
            html = f'{html.rstrip()}\n<p style="color:#999999;font-size:smaller">{token}</p>\n'
    msg.set_content(text, charset="utf-8", cte=_cte(text))
    if html:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=_cte(html))
        for part in msg.iter_parts():
            # The stdlib gives each alternative its own MIME-Version; only the top needs it.
            del part["MIME-Version"]
    return msg


def _cte(body: str) -> str:
    # 7bit when ASCII; quoted-printable otherwise, since a relay may lack 8BITMIME.
    return (
        "7bit"
        if body.isascii() and all(len(x) <= 998 for x in body.splitlines())
        else ("quoted-printable")
    )
