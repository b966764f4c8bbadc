"""Walk a parsed message into body text, HTML and attachments.

Every text part is decoded from its bytes with its declared charset's superset
(7-bit stateful charsets such as ISO-2022-JP included), or with the message's
own hints and a detector when it declares none. Every non-text leaf part is an
attachment, named after its type when the sender gave no name. Transfer
encodings are decoded leniently (the stdlib's ``get_payload(decode=True)``):
broken base64 is a defect to record, never a reason to lose the message.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from emaild.mime import charsets
from emaild.mime.headers import decode_value
from emaild.text import one_line

_BODY_TYPES = ("text/plain", "text/html")
_MAX_NOTES = 50
_PARAM_HEADERS = ("content-type", "content-disposition")
# An attachment's name as stored: longer is not a name a person gave.
MAX_NAME_CHARS = 1000


@dataclass(frozen=True)
class RawAttachment:
    filename: str
    content_type: str
    content_id: str
    disposition: str
    data: bytes


@dataclass
class Body:
    text: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[RawAttachment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def message_hints(message: Message) -> list[str]:
    """Charsets the message itself suggests for undeclared 8-bit text."""
    hints: list[str] = []
    for charset in message.get_charsets():
        codec = charsets.codec_for(charset) if isinstance(charset, str) else None
        if codec and codec not in hints and codec not in ("ascii", "utf-8"):
            hints.append(codec)
    for codec in charsets.language_hints(str(message.get("content-language") or "")):
        if codec not in hints:
            hints.append(codec)
    return hints


def extract(message: Message, hints: list[str]) -> Body:
    body = Body()
    inside: set[int] = set()  # ids of parts below an attached container
    for index, part in enumerate(message.walk()):
        ctype = part.get_content_type()
        in_attachment = id(part) in inside
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part, hints, body.notes)
        if part.is_multipart():
            if (
                in_attachment
                or disposition not in ("", "inline")
                or (disposition != "inline" and filename)
            ):
                inside.update(id(sub) for sub in _subparts(part))
            if disposition == "attachment":
                data = _container_bytes(part)
                name = filename or _generated_name(index, "text/plain")
                body.attachments.append(_item(part, name, ctype, disposition, data))
        else:
            _leaf(part, index, ctype, disposition, filename, in_attachment, hints, body)
        _defects(part, ctype, body.notes)  # after decoding: get_payload adds its defects
    del body.notes[_MAX_NOTES:]
    return body


def _leaf(
    part: Message,
    index: int,
    ctype: str,
    disposition: str,
    filename: str,
    in_attachment: bool,
    hints: list[str],
    body: Body,
) -> None:
    content_id = str(part.get("content-id") or "").strip()
    maintype, _, subtype = ctype.partition("/")
    # Named parts, inline images, RTF, anything attached, and every non-text leaf.
    is_attachment = bool(filename)
    if not is_attachment and (
        (content_id and subtype not in ("html", "plain"))
        or subtype == "rtf"
        or disposition == "attachment"
        or maintype not in ("text", "multipart", "message")
    ):
        is_attachment = True
        filename = _generated_name(index, ctype)
    data = _payload(part)
    if is_attachment:
        body.attachments.append(_item(part, filename, ctype, disposition or "attachment", data))
    inline_body = not in_attachment and disposition == "inline" and ctype in _BODY_TYPES
    if (is_attachment and not inline_body) or ctype not in _BODY_TYPES or not data:
        return
    decoded = charsets.decode(data, _charset(part), hints)
    if decoded.note:
        body.notes.append(f"{ctype} part {index}: {decoded.note}")
    (body.html if subtype == "html" else body.text).append(decoded.text)


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _charset(part: Message) -> str | None:
    value: Any = part.get_param("charset")
    if isinstance(value, tuple):  # RFC 2231 form
        value = value[2]
    return str(value) if value else None


def _filename(part: Message, hints: list[str], notes: list[str]) -> str:
    source = _eight_bit_params(part, hints)
    value: Any = source.get_param("filename", header="content-disposition")
    if value is None:
        value = source.get_param("name")
    if value is None:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded latin-1 text)
        data = str(value[2]).encode("latin-1", "surrogateescape")
        decoded = charsets.decode(data, value[0] or None, hints)
        if decoded.note:
            notes.append(f"file name: {decoded.note}")
        return _one_line(decoded.text)
    text, found = decode_value(str(value).strip('"'), hints)
    notes.extend(f"file name: {n}" for n in found)
    return _one_line(text)


def _eight_bit_params(part: Message, hints: list[str]) -> Message:
    """``part``, or its parameter headers with raw 8-bit bytes decoded (the stdlib drops them)."""
    raw = {k.lower(): v for k, v in part.raw_items() if k.lower() in _PARAM_HEADERS}
    if all(v.isascii() for v in raw.values()):
        return part
    copy = Message()
    for name, value in raw.items():
        guessed = charsets.guess(value.encode("utf-8", "surrogateescape"), hints)
        copy.set_raw(name, guessed.text if guessed else value)
    return copy


def _one_line(value: str) -> str:
    # NUL is dropped, not spaced: it is what broken encoders put inside names.
    return one_line(value.replace("\x00", ""), MAX_NAME_CHARS)


def _generated_name(index: int, ctype: str) -> str:
    ext = {"text/plain": ".txt", "image/jpeg": ".jpg", "audio/mpeg": ".mp3"}.get(ctype)
    ext = ext or mimetypes.guess_extension(ctype, strict=False) or ".bin"
    return f"part-{index}{ext}"


def _item(part: Message, name: str, ctype: str, disposition: str, data: bytes) -> RawAttachment:
    content_id = str(part.get("content-id") or "").strip()
    return RawAttachment(name, ctype, content_id, disposition, data)


def _subparts(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _container_bytes(part: Message) -> bytes:
    out = []
    for sub in _subparts(part):
        try:
            out.append(sub.as_bytes())
        except (UnicodeError, LookupError, ValueError, KeyError, TypeError):
            out.append(sub.as_string().encode("utf-8", "surrogateescape"))
    return b"".join(out)


def _defects(part: Message, ctype: str, notes: list[str]) -> None:
    for defect in part.defects:
        doc = (type(defect).__doc__ or "").strip().splitlines()
        notes.append(f"{ctype}: {type(defect).__name__}: {doc[0] if doc else ''}".rstrip(": "))
