"""Parse raw bytes into a ``ParsedMessage`` with mail-parser.

Large leaf parts are first streamed to the blob store (see ``spool``); every
other attachment is written there as it is found. Nothing here touches the
database, so the same parse serves ingestion and dry runs.
"""

from __future__ import annotations

import base64
import binascii
import email
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header, decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import mailparser

from emaild.errors import InputError
from emaild.mime.spool import MARKER_PREFIX, BlobSink, HashOnlySink, spool_large_parts

logging.getLogger("mailparser").setLevel(logging.ERROR)

_MSGID = re.compile(r"<([^<>\s]+)>")


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
    raw: bytes, *, spool_threshold: int, sink: BlobSink | None = None, raw_sha256: str | None = None
) -> ParsedMessage:
    """Parse ``raw``; attachments go to ``sink`` (only hashed when it is None).

    Raises ``InputError`` for input that is not a message at all.
    """
    if not raw or raw.isspace():
        raise InputError("empty message")
    sink = sink or HashOnlySink()
    skeleton, spooled = spool_large_parts(raw, spool_threshold, sink)
    mail = _mailparser(skeleton)
    if not mail.message or not list(mail.message.keys()):
        raise InputError("no header fields: not an RFC 5322 message")
    parsed = ParsedMessage(
        raw_sha256=raw_sha256 or hashlib.sha256(raw).hexdigest(),
        size=len(raw),
    )
    message = mail.message
    parsed.headers = [(_no_nul(str(k)), _no_nul(_decode(v))) for k, v in message.items()]
    parsed.message_id = _first_msgid(parsed.header("message-id"))
    parsed.in_reply_to = _first_msgid(parsed.header("in-reply-to"))
    parsed.references = _all_msgids(" ".join(parsed.header_all("references")))
    parsed.subject = _clean(_decode(message.get("subject", "")))
    # Addresses are split on the raw header and only the names decoded afterwards: an
    # encoded word must never be able to smuggle in a different address.
    parsed.from_ = _first_address(_raw_values(message, "from"))
    parsed.reply_to = _first_address(_raw_values(message, "reply-to"))
    parsed.to = _addresses(_raw_values(message, "to"))
    parsed.cc = _addresses(_raw_values(message, "cc"))
    parsed.date = _date(parsed.header("date"))
    parsed.text = _no_nul("\n".join(mail.text_plain))
    parsed.html = _no_nul("\n".join(mail.text_html))
    parsed.content_type = message.get_content_type()
    parsed.part_types = sorted({part.get_content_type() for part in message.walk()})
    parsed.charsets = sorted({c for c in message.get_charsets() if c})
    parsed.defects = _defects(mail)
    parsed.attachments = [_attachment(a, spooled, sink) for a in mail.attachments]
    return parsed


def _mailparser(data: bytes) -> Any:
    """mail-parser over the stdlib parse of ``data``, with its epilogue bug avoided."""
    try:
        message = email.message_from_bytes(data)
    except RecursionError:
        raise InputError("MIME nesting too deep to parse") from None
    for part in message.walk():
        # mail-parser reads the epilogue of a multipart with a broken boundary and
        # crashes when there is none (real SendGrid bounces): an empty one is the same.
        if part.is_multipart() and part.epilogue is None:
            part.epilogue = ""
    try:
        return mailparser.MailParser(message)
    except RecursionError:
        raise InputError("MIME nesting too deep to parse") from None


def _attachment(
    item: dict[str, Any], spooled: dict[bytes, Any], sink: BlobSink
) -> ParsedAttachment:
    payload = item.get("payload") or ""
    if item.get("binary"):
        data = base64.b64decode(payload) if payload else b""
    elif isinstance(payload, bytes):
        data = payload
    else:
        data = payload.encode("utf-8", "surrogateescape")
    spooled_part = spooled.get(data) if data.startswith(MARKER_PREFIX) else None
    if spooled_part is not None:
        sha, size = spooled_part.sha256, spooled_part.size
    else:
        sha, size = sink.put_chunks(iter((data,)))
    disposition = (item.get("content-disposition") or "").split(";")[0].strip().lower()
    return ParsedAttachment(
        filename=_clean(str(item.get("filename") or "")),
        content_type=str(item.get("mail_content_type") or "application/octet-stream").lower(),
        content_id=str(item.get("content-id") or "").strip(),
        disposition=disposition or "attachment",
        size=size,
        sha256=sha,
    )


def _decode(value: Any) -> str:
    """A header value as Unicode: raw 8-bit (RFC 6532 UTF-8, else cp1252), then RFC 2047."""
    if value is None:
        return ""
    if isinstance(value, Header):  # 8-bit bytes in a header: the parser wraps them
        value = "".join(_text(chunk, charset) for chunk, charset in decode_header(value))
    text = _undo_surrogates(str(value))
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (LookupError, UnicodeError, ValueError, binascii.Error, AssertionError):
        return text


def _text(chunk: bytes | str, charset: str | None) -> str:
    if isinstance(chunk, str):
        return chunk
    if charset and charset not in ("unknown-8bit", "us-ascii"):
        try:
            return chunk.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return chunk.decode("cp1252", "replace")


def _undo_surrogates(text: str) -> str:
    """The stdlib parser keeps 8-bit header bytes as surrogates; decode them properly."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


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


def _raw_values(message: Any, name: str) -> list[str]:
    """Every value of header ``name`` as text, 8-bit bytes decoded, encoded words NOT."""
    out = []
    for value in message.get_all(name) or []:
        if isinstance(value, Header):
            value = "".join(_text(chunk, cs) for chunk, cs in decode_header(value))
        out.append(_undo_surrogates(str(value)))
    return out


def _addresses(values: list[str]) -> list[Address]:
    out = []
    for name, addr in getaddresses(values):
        addr = addr.strip().lower()
        if "@" in addr and "=?" not in addr and not any(c in addr for c in "\r\n<>,; "):
            out.append(Address(_clean(_decode(name)), addr))
    return out


def _first_address(values: list[str]) -> Address | None:
    found = _addresses(values)
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


def _defects(mail: Any) -> list[str]:
    out: list[str] = []
    for item in mail.defects or []:
        if isinstance(item, dict):
            for key, values in item.items():
                items = values if isinstance(values, list) else [values]
                out.extend(f"{key}: {v}" for v in items)
        else:
            out.append(str(item))
    return out[:50]
