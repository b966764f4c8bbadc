"""Stream large MIME leaf parts to the blob store before the message is parsed.

Parsing a 35 MB message whole keeps the base64 text, the decoded bytes and
several intermediate copies in memory at once (about 9x the wire size). Instead
we find each large base64 leaf part by its boundary lines, decode it in chunks
straight into the blob store, and hand the parser a skeleton in which that body
is replaced by a short marker. The marker carries a per-call random nonce, so
message content can never impersonate a spooled part.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Protocol

CHUNK = 1024 * 1024
_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)
MARKER_PREFIX = b"emaild-spooled:"


class BlobSink(Protocol):
    def put_chunks(self, chunks: Iterator[bytes]) -> tuple[str, int]: ...


@dataclass(frozen=True)
class SpooledPart:
    sha256: str
    size: int


class HashOnlySink:
    """A sink that only hashes, for dry runs (``emaild rules test``)."""

    def put_chunks(self, chunks: Iterator[bytes]) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size


def spool_large_parts(
    raw: bytes, threshold: int, sink: BlobSink
) -> tuple[bytes, dict[bytes, SpooledPart]]:
    """Return (skeleton, {marker payload: spooled part}); ``raw`` itself if nothing is large."""
    if len(raw) < threshold:
        return raw, {}
    boundaries = {m.group(1) or m.group(2) for m in _BOUNDARY.finditer(raw)}
    if not boundaries:
        return raw, {}
    alternation = b"|".join(re.escape(b) for b in sorted(boundaries, key=len, reverse=True))
    delimiter = re.compile(rb"^--(?:" + alternation + rb")(--)?[ \t]*\r?$", re.M)
    lines = list(delimiter.finditer(raw))
    nonce = secrets.token_hex(16).encode()
    spooled: dict[bytes, SpooledPart] = {}
    pieces: list[bytes | memoryview] = []
    view = memoryview(raw)
    cursor = 0
    for current, following in itertools.pairwise(lines):
        if current.group(1):  # a closing delimiter starts no part
            continue
        start = current.end() + 1  # skip the line break ending the delimiter line
        end = following.start()
        if end - start < threshold:
            continue
        body = _large_base64_body(raw, start, end)
        if body is None:
            continue
        body_start, body_end = body
        sha, size = sink.put_chunks(_decode_base64(view[body_start:body_end]))
        marker = MARKER_PREFIX + nonce + b":" + str(len(spooled)).encode()
        spooled[marker] = SpooledPart(sha, size)
        pieces.append(view[cursor:body_start])
        pieces.append(base64.b64encode(marker) + b"\r\n")
        cursor = body_end
    if not spooled:
        return raw, {}
    pieces.append(view[cursor:])
    return b"".join(pieces), spooled


def _large_base64_body(raw: bytes, start: int, end: int) -> tuple[int, int] | None:
    """The body span of a base64 non-text leaf part in raw[start:end], else None."""
    head_limit = min(end, start + 65536)
    head_end = -1
    for sep in (b"\r\n\r\n", b"\n\n"):
        pos = raw.find(sep, start, head_limit)
        if pos != -1 and (head_end == -1 or pos < head_end):
            head_end, sep_len = pos, len(sep)
    if head_end == -1:
        return None
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[start:head_end])
    encoding = str(headers.get("content-transfer-encoding", "")).strip().lower()
    if encoding != "base64":
        return None
    ctype = headers.get_content_type()
    if ctype.startswith(("multipart/", "message/")):
        return None
    if ctype.startswith("text/") and not (
        headers.get_filename() or headers.get_content_disposition() == "attachment"
    ):
        return None  # a body, which the parser must see
    body_start = head_end + sep_len
    # The line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1).
    body_end = end
    if raw[body_end - 2 : body_end] == b"\r\n":
        body_end -= 2
    elif raw[body_end - 1 : body_end] == b"\n":
        body_end -= 1
    return body_start, max(body_start, body_end)


def _decode_base64(body: memoryview) -> Iterator[bytes]:
    carry = b""
    for offset in range(0, len(body), CHUNK):
        data = carry + bytes(body[offset : offset + CHUNK]).translate(None, _NOT_B64)
        usable = len(data) - len(data) % 4
        carry = data[usable:]
        if usable:
            yield _a2b(data[:usable])
    if carry:
        yield _a2b(carry + b"=" * (-len(carry) % 4))


def _a2b(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""
