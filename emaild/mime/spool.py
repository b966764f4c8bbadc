"""Stream large MIME leaf parts to the blob store before the message is parsed.

Parsing a 35 MB message whole keeps the encoded text, the stdlib parser's
line lists, the decoded bytes and the decoded text in memory at once (8x to
20x the wire size, the most for a text or HTML body). Instead we walk the
message's declared structure on the raw bytes (each multipart split at its
own boundary, attached messages included), decode each large leaf body in
chunks straight into the blob store, and hand the parser a skeleton in which
that body is replaced:

- an attachment's body by a short marker. The marker carries a per-call
  random nonce, so message content can never impersonate a spooled part;
- a text body (text/plain, text/html, any text part that is not an
  attachment) once the message's text bodies together pass ``text_budget``
  bytes as transmitted: by its beginning, up to what is left of the budget,
  valid in its own transfer encoding (``transfer.prefix``). The whole part,
  decoded, is stored as an attachment (``body.txt``, ``body.html``) with its
  content type and charset, and a defect says so. Nothing is lost: the raw
  message is stored byte-exact as well.

So what the parser, the charset decoder and the text extraction see of a
message is bounded by the budget and the attachment threshold, whatever
the shape of its bulk. One cost of this: an attached message that is itself
stored as an attachment (``message/rfc822`` with a disposition) is
re-serialised from the skeleton, so it carries the markers and cut bodies;
its large parts are separate attachments and the raw message is exact.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Protocol

from emaild.mime.transfer import decoder, prefix

# Text bodies kept for the parser, together, in bytes as transmitted.
TEXT_BUDGET = 512 * 1024
_HEAD_LIMIT = 256 * 1024
_MAX_NESTED = 20  # messages attached inside attached messages
_ATTACHED_MESSAGE = ("message/rfc822", "message/global")
# A header line as the stdlib's feedparser sees one (its headerRE).
_FIELD_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
_BODY_TYPES = ("text/plain", "text/html")
MARKER_PREFIX = b"emaild-spooled:"


class BlobSink(Protocol):
    def put_chunks(self, chunks: Iterator[bytes]) -> tuple[str, int]: ...


@dataclass(frozen=True)
class SpooledPart:
    sha256: str
    size: int


@dataclass(frozen=True)
class SpooledBody:
    """A text body stored whole as an attachment; the parser saw only its beginning."""

    filename: str
    content_type: str  # with its charset parameter when it declared one
    sha256: str
    size: int


@dataclass
class Spooled:
    """What ``spool_large_parts`` made of a message."""

    skeleton: bytes
    parts: dict[bytes, SpooledPart] = field(default_factory=dict)  # marker payload -> part
    bodies: list[SpooledBody] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class HashOnlySink:
    """A sink that only hashes, for dry runs (``emaild rules test``)."""

    def put_chunks(self, chunks: Iterator[bytes]) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size


@dataclass(frozen=True)
class _Leaf:
    head: Message
    body_start: int
    body_end: int
    encoding: str


def spool_large_parts(
    raw: bytes, threshold: int, sink: BlobSink, text_budget: int = TEXT_BUDGET
) -> Spooled:
    """The skeleton to parse and what was spooled; ``raw`` itself if nothing is large."""
    if len(raw) < min(threshold, text_budget):
        return Spooled(raw)
    nonce = secrets.token_hex(16).encode()
    out = Spooled(raw)
    pieces: list[bytes | memoryview] = []
    view = memoryview(raw)
    cursor = 0
    left = text_budget
    for index, leaf in enumerate(_leaves(raw)):
        size = leaf.body_end - leaf.body_start
        ctype = leaf.head.get_content_type()
        decode = decoder(leaf.encoding)
        if decode is None:
            continue
        if _attachment(leaf.head):
            if size < threshold:
                continue
            sha, decoded = sink.put_chunks(decode(view[leaf.body_start : leaf.body_end]))
            marker = MARKER_PREFIX + nonce + b":" + str(len(out.parts)).encode()
            out.parts[marker] = SpooledPart(sha, decoded)
            kept = base64.b64encode(marker) + b"\r\n" if leaf.encoding == "base64" else marker
        elif ctype.startswith("text/"):
            if size <= left:
                left -= size
                continue
            sha, decoded = sink.put_chunks(decode(view[leaf.body_start : leaf.body_end]))
            kept = prefix(view[leaf.body_start : leaf.body_end], leaf.encoding, left)
            out.bodies.append(_body(leaf.head, ctype, sha, decoded, len(out.bodies)))
            out.notes.append(
                f"{ctype} part {index}: text body over {left} bytes: truncated to {len(kept)}; "
                f"whole part ({decoded} bytes) stored as attachment {out.bodies[-1].filename}"
            )
            left = 0
        else:
            continue
        pieces.append(view[cursor : leaf.body_start])
        pieces.append(kept)
        cursor = leaf.body_end
    if not pieces:
        return Spooled(raw)
    pieces.append(view[cursor:])
    out.skeleton = b"".join(pieces)
    return out


def _leaves(raw: bytes) -> Iterator[_Leaf]:
    """The leaf parts of ``raw`` in order, found as the parser finds them.

    Each multipart's parts are split at the delimiter lines of its own
    declared boundary, within its own span (a boundary that only appears in
    some text is not one); the body of an attached message
    (``message/rfc822``) is walked like a message.
    """
    yield from _walk(raw, 0, len(raw), 0)


def _walk(raw: bytes, start: int, end: int, depth: int) -> Iterator[_Leaf]:
    leaf = _leaf(raw, start, end)
    if leaf is None or depth > _MAX_NESTED:
        return
    maintype = leaf.head.get_content_maintype()
    if maintype == "message":
        if leaf.head.get_content_type() in _ATTACHED_MESSAGE and leaf.encoding not in (
            "base64",
            "quoted-printable",
        ):
            yield from _walk(raw, leaf.body_start, leaf.body_end, depth + 1)
        return  # delivery-status and the like: header blocks, left to the parser
    if maintype != "multipart":
        yield leaf
        return
    try:
        boundary = (leaf.head.get_boundary() or "").encode("ascii", "surrogateescape")
    except UnicodeError:
        return
    if not boundary:
        return
    delimiter = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$", re.M)
    lines = list(delimiter.finditer(raw, leaf.body_start, leaf.body_end))
    for index, current in enumerate(lines):
        if current.group(1):
            return  # the closing delimiter: what follows is the epilogue
        # The line break ending the delimiter line starts the part; the one
        # before the next delimiter belongs to that delimiter (RFC 2046 5.1.1),
        # and the stdlib's parser drops it at the end of an unclosed multipart too.
        part_end = lines[index + 1].start() if index + 1 < len(lines) else leaf.body_end
        if raw[part_end - 2 : part_end] == b"\r\n":
            part_end -= 2
        elif raw[part_end - 1 : part_end] == b"\n":
            part_end -= 1
        part_start = min(current.end() + 1, part_end)
        yield from _walk(raw, part_start, part_end, depth + 1)


def _leaf(raw: bytes, start: int, end: int) -> _Leaf | None:
    """The part in raw[start:end]: its header fields and the span of its body.

    The header block ends where the stdlib's parser ends it: at an empty
    line, or before the first line that is neither a field nor a
    continuation (that line is body). None if it runs past ``_HEAD_LIMIT``.
    """
    head_limit = min(end, start + _HEAD_LIMIT)
    pos = start
    while True:
        if pos >= end:
            head_end = body_start = end
            break
        if pos >= head_limit:
            return None
        newline = raw.find(b"\n", pos, end)
        line_end = newline + 1 if newline != -1 else end
        if raw[pos:line_end] in (b"\r\n", b"\n"):
            head_end, body_start = pos, line_end
            break
        if not _FIELD_LINE.match(raw, pos, line_end):
            head_end = body_start = pos
            break
        pos = line_end
    head = BytesHeaderParser(policy=compat32).parsebytes(raw[start:head_end])
    encoding = str(head.get("content-transfer-encoding", "")).strip().lower()
    return _Leaf(head, body_start, end, encoding)


def _attachment(head: Message) -> bool:
    """Whether ``mime.parts`` files this part as an attachment only, never as body text."""
    ctype = head.get_content_type()
    maintype, _, subtype = ctype.partition("/")
    disposition = (head.get_content_disposition() or "").lower()
    if disposition == "inline" and ctype in _BODY_TYPES:
        return False  # also body text, even when named
    return bool(
        maintype != "text"
        or head.get_filename()
        or head.get_param("name")
        or disposition == "attachment"
        or subtype == "rtf"
        or (head.get("content-id") and subtype not in ("html", "plain"))
    )


def _body(head: Message, ctype: str, sha: str, size: int, count: int) -> SpooledBody:
    ext = {"text/plain": ".txt", "text/html": ".html"}.get(ctype)
    ext = ext or mimetypes.guess_extension(ctype, strict=False) or ".txt"
    name = f"body{ext}" if count == 0 else f"body-{count + 1}{ext}"
    charset = head.get_content_charset()
    content_type = f"{ctype}; charset={charset}" if charset else ctype
    return SpooledBody(name, content_type[:255], sha, size)
