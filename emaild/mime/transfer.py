"""Content-Transfer-Encodings decoded in chunks, and bounded prefixes of encoded bodies.

Used by ``spool`` to stream a large MIME part's body to the blob store
without holding it decoded (or as the stdlib parser's line lists) in memory,
and to cut a text body down to a prefix the parser can afford: the prefix is
valid in the part's own encoding, ends at a line break where there is one,
and never splits a quoted-printable escape or a base64 quantum.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator

CHUNK = 1024 * 1024
# How far back from a cut a line break is looked for before cutting mid-line.
_LINE_SEARCH = 64 * 1024
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)
# Encodings the stdlib decodes specially that we leave to it (rare, never large in practice).
_UUENCODE = ("x-uuencode", "uuencode", "uue", "x-uue")

Decoder = Callable[[memoryview], Iterator[bytes]]


def decoder(encoding: str) -> Decoder | None:
    """The chunked decoder for a Content-Transfer-Encoding, as the stdlib's
    ``get_payload(decode=True)`` decodes it (unknown encodings are identity);
    None for uuencode, which is left to the parser."""
    if encoding == "base64":
        return decode_base64
    if encoding == "quoted-printable":
        return decode_qp
    if encoding in _UUENCODE:
        return None
    return decode_identity


def decode_identity(body: memoryview) -> Iterator[bytes]:
    for offset in range(0, len(body), CHUNK):
        yield bytes(body[offset : offset + CHUNK])


def decode_base64(body: memoryview) -> Iterator[bytes]:
    """Lenient, like the stdlib: characters outside the alphabet are skipped."""
    carry = b""
    for offset in range(0, len(body), CHUNK):
        data = carry + bytes(body[offset : offset + CHUNK]).translate(None, _NOT_B64)
        usable = len(data) - len(data) % 4
        carry = data[usable:]
        if usable:
            yield _a2b(data[:usable])
    if carry:
        yield _a2b(carry + b"=" * (-len(carry) % 4))


def decode_qp(body: memoryview) -> Iterator[bytes]:
    """Quoted-printable in chunks cut after a line break (a soft break stays whole)."""
    offset = 0
    while offset < len(body):
        end = _qp_cut(body, offset, offset + CHUNK, any_break=True)
        yield binascii.a2b_qp(bytes(body[offset:end]))
        offset = end


def prefix(body: memoryview, encoding: str, limit: int) -> bytes:
    """At most about ``limit`` bytes from the start of ``body``, valid in ``encoding``.

    Identity: cut after the last line break before ``limit``. Quoted-printable:
    after the last hard line break (a line not ending in ``=``), so no
    character split over a soft break is cut in half. Base64: the decoded
    beginning, cut after its last line break, encoded again.
    """
    if limit <= 0:
        return b""
    if len(body) <= limit:
        return bytes(body)
    if encoding == "base64":
        chars = bytes(body[:limit]).translate(None, _NOT_B64)
        decoded = _a2b(chars[: len(chars) - len(chars) % 4])
        cut = decoded.rfind(b"\n", max(0, len(decoded) - _LINE_SEARCH))
        decoded = decoded[: cut + 1] if cut != -1 else decoded
        return base64.encodebytes(decoded).replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return bytes(body[: _qp_cut(body, 0, limit, any_break=False)])
    low = max(0, limit - _LINE_SEARCH)
    cut = bytes(body[low:limit]).rfind(b"\n")
    return bytes(body[: low + cut + 1 if cut != -1 else limit])


def _qp_cut(body: memoryview, start: int, end: int, *, any_break: bool) -> int:
    """An offset in (start, end] to cut quoted-printable ``body`` at."""
    if end >= len(body):
        return len(body)
    low = max(start, end - _LINE_SEARCH)
    window = bytes(body[low:end])
    pos = len(window)
    while True:
        pos = window.rfind(b"\n", 0, pos)
        if pos == -1:
            break
        line_end = pos - 1 if pos > 0 and window[pos - 1 : pos] == b"\r" else pos
        if any_break or window[line_end - 1 : line_end] != b"=":
            return low + pos + 1
    # No usable line break: cut mid-line, but never inside an "=XX" escape.
    tail = bytes(body[max(start, end - 2) : end])
    back = len(tail) - tail.rfind(b"=") if b"=" in tail else 0
    return max(start + 1, end - back)


def _a2b(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""
