"""What a message's bytes tell before parsing: its Message-ID and its parse cost.

One pass over the raw lines, no decoding (issue 18 §2):

- ``quick_message_id``: the Message-ID of a plain top-level header block, so
  a retry of mail already stored is answered without parsing it again. When
  the block is anything but plain (junk before it, the field twice, encoded or
  non-ASCII, folded oddly) it returns "" and the message is parsed as usual:
  a miss costs a parse, never a wrong answer.
- ``over_limits``: header fields and bytes, recipients in To/Cc/Bcc, MIME
  parts (delimiter lines of declared boundaries) and multipart nesting, each
  against ``ParseLimits``; the first one over is the reason the message is
  kept raw in quarantine instead of parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A field name, as RFC 5322 allows it, at the start of a line.
_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
_MSGID_VALUE = re.compile(rb"^\s*(<[!-;=?-~]{1,900}>)\s*$")
_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)
_DELIMITER = re.compile(rb"^--([^\n]{0,1000})", re.M)
_RECIPIENT_FIELDS = (b"to", b"cc", b"bcc", b"resent-to", b"resent-cc")


@dataclass(frozen=True)
class ParseLimits:
    """The most of each a message may have to be parsed (``[limits]``)."""

    max_header_fields: int = 2000
    max_header_bytes: int = 256 * 1024
    max_recipients: int = 1000
    max_parts: int = 1000
    max_depth: int = 20


class OverLimit(Exception):
    """The message is over a parse limit: keep it raw, do not parse it."""


def header_block(raw: bytes) -> bytes:
    """The bytes before the first empty line (all of ``raw`` if there is none)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end != -1:
            return raw[:end]
    return raw


def _fields(block: bytes) -> list[tuple[bytes, bytes]] | None:
    """``[(lower name, unfolded value)]`` of a plain header block, else None."""
    fields: list[tuple[bytes, bytes]] = []
    for line in block.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                return None
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.strip())
            continue
        match = _FIELD.match(line)
        if match is None:
            return None
        name = match.group(0)[:-1].strip().lower()
        fields.append((name, line[match.end() :]))
    return fields


def quick_message_id(raw: bytes) -> str:
    """The Message-ID the parser would find, when the header block is plain; else ""."""
    fields = _fields(header_block(raw))
    if not fields:
        return ""
    values = [value for name, value in fields if name == b"message-id"]
    if len(values) != 1:
        return ""
    match = _MSGID_VALUE.match(values[0])
    return match.group(1).decode("ascii") if match else ""


def over_limits(raw: bytes, limits: ParseLimits) -> str:
    """Why ``raw`` is too costly to parse ("" if it is within every limit)."""
    block = header_block(raw)
    if len(block) > limits.max_header_bytes:
        return (
            f"header block of {len(block)} bytes, over max_header_bytes = {limits.max_header_bytes}"
        )
    lines = block.count(b"\n") + 1
    starts = lines - block.count(b"\n ") - block.count(b"\n\t")
    if starts > limits.max_header_fields:
        return f"{starts} header fields, over max_header_fields = {limits.max_header_fields}"
    recipients = 0
    for name, value in _fields(block) or []:
        if name in _RECIPIENT_FIELDS:
            recipients += value.count(b"@")
    if recipients > limits.max_recipients:
        return f"{recipients} recipients, over max_recipients = {limits.max_recipients}"
    return _structure(raw, limits)


def _structure(raw: bytes, limits: ParseLimits) -> str:
    """Parts and nesting, from the delimiter lines of every declared boundary."""
    boundaries = {a or b for a, b in _BOUNDARY.findall(raw)}
    if not boundaries:
        return ""
    parts, depth = 0, 0
    stack: list[bytes] = []
    for found in _DELIMITER.finditer(raw):
        token = found.group(1).rstrip(b"\r \t")
        closing = token.endswith(b"--") and token[:-2] in boundaries
        name = token[:-2] if closing else token
        if name not in boundaries:
            continue
        if name in stack:
            del stack[stack.index(name) + 1 :]  # inner parts ended without closing
            if closing:
                stack.pop()
                continue
        elif not closing:
            stack.append(name)
        else:
            continue
        parts += 1
        depth = max(depth, len(stack))
        if parts > limits.max_parts:
            return f"more than {limits.max_parts} MIME parts (max_parts)"
        if depth > limits.max_depth:
            return f"multipart nesting deeper than {limits.max_depth} (max_depth)"
    return ""
