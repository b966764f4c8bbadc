"""Header blocks and header values as mail clients read them.

- ``repair_header_block``: junk lines before the header block are skipped, and
  lines inside it that are not fields (gateways that fold without indenting)
  become continuation lines, so From and Subject are not lost to the body.
- ``decode_value``: undeclared 8-bit bytes and RFC 2047 encoded words decoded
  with the charset supersets clients use, leniently (bad base64, unknown
  charsets), every guess or repair reported as a note.
- ``split_addresses``: addresses split on the raw value, encoded words kept
  opaque until the display names are decoded.
"""

from __future__ import annotations

import binascii
import re
from email.utils import getaddresses

from emaild.mime import charsets

_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_LINE = re.compile(rb"[^\n]*\n|[^\n]+$")
# The header block ends at the first empty line; bounded so a huge body is never split.
_HEADER_SCAN = 256 * 1024
_JUNK_LINES = 5
_EW = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")


def repair_header_block(data: bytes) -> tuple[bytes, list[str]]:
    """``data`` with a header block the stdlib parser reads whole, and what was repaired."""
    lines = _header_lines(data)
    if all(_ok(i, line) for i, line in enumerate(lines)):
        return data, []  # the usual case: nothing to do
    notes: list[str] = []
    skip = _leading_junk(lines)
    if skip:
        notes.append(f"header: skipped {skip} line(s) before the header block")
    block = lines[skip:]
    last_field = max((i for i, line in enumerate(block) if _FIELD.match(line)), default=-1)
    first_field = next((i for i, line in enumerate(block) if _FIELD.match(line)), 0)
    fixed = 0
    for i in range(first_field + 1, last_field):
        line = block[i]
        if not _ok(i, line) and line.strip():
            block[i] = b" " + line
            fixed += 1
    if fixed:
        notes.append(f"header: {fixed} unindented continuation line(s) joined")
    if not notes:
        return data, []
    consumed = sum(len(line) for line in lines)
    return b"".join(block) + data[consumed:], notes


def _ok(index: int, line: bytes) -> bool:
    """A field, a continuation, or the mbox "From " line at the very top."""
    return bool(
        _FIELD.match(line)
        or line[:1] in (b" ", b"\t")
        or (index == 0 and line.startswith(b"From "))
    )


def _header_lines(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    seen_field = False
    for match in _LINE.finditer(data, 0, min(len(data), _HEADER_SCAN)):
        line = match.group()
        if not line.strip(b"\r\n"):
            if seen_field:
                break
            out.append(line)  # blank lines before any field: maybe junk before the block
            continue
        seen_field = seen_field or bool(_FIELD.match(line))
        out.append(line)
    return out


def _leading_junk(lines: list[bytes]) -> int:
    """How many leading lines to drop: non-fields followed by at least two fields."""
    if not lines or _FIELD.match(lines[0]) or lines[0].startswith(b"From "):
        return 0
    for skip in range(1, min(len(lines), _JUNK_LINES + 1)):
        rest = lines[skip : skip + 2]
        if len(rest) == 2 and all(_FIELD.match(line) for line in rest):
            return skip
    return 0


def decode_value(value: str, hints: list[str]) -> tuple[str, list[str]]:
    """A raw header value (8-bit bytes as surrogates) as Unicode, and notes on any guess."""
    notes: list[str] = []
    text = value
    if not value.isascii():
        data = value.encode("utf-8", "surrogateescape")
        guessed = charsets.guess(data, hints)
        if guessed is None:
            text = data.decode("utf-8", "replace")
            notes.append("undeclared 8-bit header bytes replaced")
        else:
            text = guessed.text
            if guessed.codec != "utf-8":
                notes.append(f"undeclared 8-bit header {guessed.note}")
    if "=?" not in text:
        return text, notes
    return decode_words(text, hints, notes)


def decode_words(text: str, hints: list[str], notes: list[str]) -> tuple[str, list[str]]:
    """RFC 2047 encoded words decoded; adjacent words of one charset joined before decoding."""
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            decoded = charsets.decode(b"".join(pending), pending_charset, hints)
            if decoded.note:
                notes.append(f"encoded word: {decoded.note}")
            out.append(decoded.text)
        pending, pending_charset = [], ""

    for match in _EW.finditer(text):
        between = text[pos : match.start()]
        if between and (not pending or between.strip()):
            flush()
            out.append(between)
        charset = match.group(1).split("*", 1)[0]
        data = _word_bytes(match.group(2).lower(), match.group(3).encode("ascii", "replace"))
        if data is None:
            notes.append("encoded word: base64 repaired")
            data = _lenient_b64(match.group(3).encode("ascii", "replace"))
        if pending and charset.lower() != pending_charset.lower():
            flush()
        pending.append(data)
        pending_charset = charset
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out), notes


def _word_bytes(kind: str, encoded: bytes) -> bytes | None:
    if kind == "q":
        return _QP_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), encoded.replace(b"_", b" "))
    try:
        return binascii.a2b_base64(encoded, strict_mode=True)
    except binascii.Error:
        return None


def _lenient_b64(encoded: bytes) -> bytes:
    clean = _B64_JUNK.sub(b"", encoded)
    clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except binascii.Error:
        return b""


def split_addresses(values: list[str]) -> list[tuple[str, str]]:
    """(raw display name, address) pairs; encoded words cannot add or split addresses."""
    return getaddresses([_quote_words(v) for v in values])


def _quote_words(value: str) -> str:
    """Encoded words outside quoted strings and comments become quoted strings."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pos = 0
    for match in _EW.finditer(value):
        if _inside_quotes_or_comment(value, match.start()):
            continue
        word = match.group().replace("\\", "\\\\").replace('"', '\\"')
        out += [value[pos : match.start()], f'"{word}"']
        pos = match.end()
    out.append(value[pos:])
    return "".join(out)


def _inside_quotes_or_comment(value: str, end: int) -> bool:
    quoted, depth, escaped = False, 0, False
    for char in value[:end]:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and not depth:
            quoted = not quoted
        elif char == "(" and not quoted:
            depth += 1
        elif char == ")" and not quoted and depth:
            depth -= 1
    return quoted or depth > 0
