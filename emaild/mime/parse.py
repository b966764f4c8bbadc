"""Parse raw bytes into a ``ParsedMessage`` with the stdlib's ``email`` parser.

mail-parser, which wraps the same parser, returned 7-bit parts undecoded
(ISO-2022-JP), filed unnamed binary parts as "text not managed" and raised on
lenient base64: ``mime.parts`` walks the stdlib's tree itself instead, once.
Large leaf parts are first streamed to the blob store (see ``spool``); every
other attachment is written there as it is found. Nothing here touches the
database, so the same parse serves ingestion and dry runs.
"""

from __future__ import annotations

import base64
import binascii
import email
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.policy import compat32
from email.utils import parsedate_to_datetime
from typing import Any

from emaild.errors import InputError
from emaild.mime.headers import decode_value, repair_header_block, split_addresses
from emaild.mime.htmltext import html_to_text
from emaild.mime.parts import RawAttachment, extract, message_hints
from emaild.mime.spool import (
    MARKER_PREFIX,
    TEXT_BUDGET,
    BlobSink,
    HashOnlySink,
    SpooledBody,
    spool_large_parts,
)

_MSGID = re.compile(r"<([^<>\s]+)>")
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")
_NULL_PATH = re.compile(r"^\s*<\s*>\s*$")


@dataclass(frozen=True)
class Address:
    name: str
    addr: str

    def __str__(self) -> str:
        return f"{self.name} <{self.addr}>" if self.name else self.addr


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    content_id: str
    disposition: str
    size: int
    sha256: str


@dataclass
class ParsedMessage:
    """Everything the later stages need, decoded to Unicode."""

    raw_sha256: str
    size: int
    message_id: str = ""
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_: Address | None = None
    reply_to: Address | None = None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    date: datetime | None = None
    text: str = ""
    html: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    content_type: str = "text/plain"
    charsets: list[str] = field(default_factory=list)
    # Content types of every MIME part, attachments or not (message/rfc822 inside a bounce).
    part_types: list[str] = field(default_factory=list)
    # Text bodies cut to the text budget, each stored whole as an attachment (``spool``).
    truncated: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def from_addr(self) -> str:
        return self.from_.addr if self.from_ else ""

    @property
    def customer(self) -> Address | None:
        """Who wrote the message: From, or Reply-To when there is no usable From."""
        return self.from_ or self.reply_to

    @property
    def customer_addr(self) -> str:
        """The address a case belongs to (``from_addr``, else the Reply-To address)."""
        return self.customer.addr if self.customer else ""

    @property
    def null_return_path(self) -> bool:
        """The delivering MTA recorded a null envelope sender (``Return-Path: <>``)."""
        value = self.header("return-path")
        return value is not None and bool(_NULL_PATH.match(value))

    @property
    def thread_index(self) -> str:
        """Hex of the first 22 bytes of Outlook's Thread-Index (its conversation root)."""
        value = self.header("thread-index")
        if not value:
            return ""
        try:
            decoded = base64.b64decode("".join(value.split()), validate=False)
        except (binascii.Error, ValueError):
            return ""
        return decoded[:22].hex() if len(decoded) >= 22 else ""

    @property
    def dedup_key(self) -> str:
        """Same Message-ID, or without one the same bytes, means the same message."""
        return f"mid:{self.message_id}" if self.message_id else f"sha256:{self.raw_sha256}"


def parse_message(
    raw: bytes,
    *,
    spool_threshold: int,
    sink: BlobSink | None = None,
    raw_sha256: str | None = None,
    text_budget: int = TEXT_BUDGET,
) -> ParsedMessage:
    """Parse ``raw``; attachments go to ``sink`` (only hashed when it is None).

    Text bodies beyond ``text_budget`` bytes are cut there and stored whole as
    attachments (``spool``), so a text-heavy message costs no more to parse
    than one with an attachment.

    Raises ``InputError`` for input that is not a message at all.
    """
    if not raw or raw.isspace():
        raise InputError("empty message")
    sink = sink or HashOnlySink()
    spooled = spool_large_parts(raw, spool_threshold, sink, text_budget)
    skeleton, notes = repair_header_block(spooled.skeleton)
    notes = spooled.notes + notes
    message = _stdlib(skeleton)
    if not list(message.keys()):
        raise InputError("no header fields: not an RFC 5322 message")
    parsed = ParsedMessage(
        raw_sha256=raw_sha256 or hashlib.sha256(raw).hexdigest(),
        size=len(raw),
    )
    hints = message_hints(message)
    parsed.headers = [
        (_no_nul(str(k)), _no_nul(_header(str(k), v, hints, notes))) for k, v in message.raw_items()
    ]
    parsed.message_id = _first_msgid(parsed.header("message-id"))
    parsed.in_reply_to = _first_msgid(parsed.header("in-reply-to"))
    parsed.references = _all_msgids(" ".join(parsed.header_all("references")))
    subject = next((str(v) for k, v in message.raw_items() if k.lower() == "subject"), "")
    parsed.subject = _clean(_header("subject", subject, hints, []))
    # Addresses are split on the raw header and only the names decoded afterwards: an
    # encoded word must never be able to smuggle in a different address.
    parsed.from_ = _first_address(_raw_values(message, "from"), hints)
    parsed.reply_to = _first_address(_raw_values(message, "reply-to"), hints)
    parsed.to = _addresses(_raw_values(message, "to"), hints)
    parsed.cc = _addresses(_raw_values(message, "cc"), hints)
    parsed.date = _date(parsed.header("date"))
    body = extract(message, hints)
    parsed.text = _no_nul("\n".join(body.text))
    parsed.html = _no_nul("\n".join(body.html))
    if not parsed.text.strip() and parsed.html.strip():
        parsed.text = _no_nul(html_to_text(parsed.html))
        notes.append("text/html: text derived from the HTML (no text/plain part)")
    parsed.content_type = message.get_content_type()
    parsed.part_types = sorted({part.get_content_type() for part in message.walk()})
    parsed.charsets = sorted({c for c in message.get_charsets() if c})
    parsed.defects = [_no_nul(n) for n in notes + body.notes][:50]
    parsed.attachments = [_attachment(a, spooled.parts, sink) for a in body.attachments]
    parsed.attachments += [_body_attachment(b) for b in spooled.bodies]
    parsed.truncated = list(spooled.notes)
    return parsed


def _stdlib(data: bytes) -> Message:
    try:
        return email.message_from_bytes(data, policy=compat32)
    except RecursionError:
        raise InputError("MIME nesting too deep to parse") from None


def _attachment(item: RawAttachment, spooled: dict[bytes, Any], sink: BlobSink) -> ParsedAttachment:
    data = item.data
    spooled_part = spooled.get(data) if data.startswith(MARKER_PREFIX) else None
    if spooled_part is not None:
        sha, size = spooled_part.sha256, spooled_part.size
    else:
        sha, size = sink.put_chunks(iter((data,)))
    return ParsedAttachment(
        filename=_clean(item.filename),
        content_type=item.content_type.lower() or "application/octet-stream",
        content_id=item.content_id,
        disposition=item.disposition or "attachment",
        size=size,
        sha256=sha,
    )


def _body_attachment(body: SpooledBody) -> ParsedAttachment:
    return ParsedAttachment(
        filename=body.filename,
        content_type=body.content_type,
        content_id="",
        disposition="attachment",
        size=body.size,
        sha256=body.sha256,
    )


def _header(name: str, value: str, hints: list[str], notes: list[str]) -> str:
    """A header value as Unicode: 8-bit bytes (UTF-8, else guessed), then RFC 2047 words."""
    text, found = decode_value(value, hints)
    notes.extend(f"header {name}: {note}" for note in found)
    return _UNFOLD.sub("", text) if "=?" in value else text


def _no_nul(value: str) -> str:
    """NUL can't be stored in PostgreSQL text; a decoded "=00" must not quarantine mail."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _clean(value: str) -> str:
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(value.replace("\x00", "").split())


def _first_msgid(value: str | None) -> str:
    ids = _all_msgids(value or "")
    if ids:
        return ids[0]
    value = (value or "").strip()
    return f"<{value}>" if value and " " not in value and len(value) < 900 else ""


def _all_msgids(value: str) -> list[str]:
    return [f"<{m}>" for m in _MSGID.findall(value)][:100]


def _raw_values(message: Message, name: str) -> list[str]:
    """Every value of header ``name`` as the parser read it: encoded words NOT decoded."""
    wanted = name.lower()
    return [str(v) for k, v in message.raw_items() if k.lower() == wanted]


def _addresses(values: list[str], hints: list[str]) -> list[Address]:
    out = []
    for name, addr in split_addresses(values):
        addr, _ = decode_value(addr.strip().lower(), hints)
        if "@" in addr and "=?" not in addr and not any(c in addr for c in "\r\n<>,; "):
            out.append(Address(_clean(decode_value(name, hints)[0]), addr))
    return out


def _first_address(values: list[str], hints: list[str]) -> Address | None:
    found = _addresses(values, hints)
    return found[0] if found else None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
