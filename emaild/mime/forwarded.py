"""Who wrote a forwarded message: the original sender inside a forward.

Agents forward customers' mail to the support address. Mail clients mark an
inline forward with a separator line and a small header block; the one that
matters is its ``From:``. Recognised (with the ``> `` quoting some add):

- Gmail: ``---------- Forwarded message ---------`` then From, Date, Subject, To;
- Thunderbird: ``-------- Forwarded Message --------`` then Subject, Date, From, To;
- Apple Mail: ``Begin forwarded message:``, a blank line, then From, Subject, Date, To;
- Outlook: ``-----Original Message-----`` or a line of underscores, then
  From (``Name <addr>`` or ``Name [mailto:addr]``), Sent, To, Subject.

A message forwarded as an attachment carries the original as a
``message/rfc822`` part: its ``From`` header says who wrote it. The search
is bounded: the first ``MAX_SCAN_LINES`` lines of the text, the first
``MAX_PARTS`` MIME parts.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses

from emaild.mime.spool import HashOnlySink, spool_large_parts

MAX_SCAN_LINES = 400
_SPOOL_THRESHOLD = 256 * 1024
MAX_HEADER_LINES = 12
MAX_PARTS = 50

_MARKERS = (
    ("gmail/thunderbird", re.compile(r"^-{2,}\s*forwarded message\s*-{2,}$", re.I)),
    ("apple mail", re.compile(r"^begin forwarded message:$", re.I)),
    ("outlook", re.compile(r"^-{2,}\s*original message\s*-{2,}$", re.I)),
    ("outlook", re.compile(r"^_{10,}$")),
)
# "From" in the languages mail clients localise the forward block into.
_FROM = re.compile(r"^(?:from|von|de|da|van|från|fra|od|от)\s*:\s*(.+)$", re.I)
_HEADERISH = re.compile(r"^[\w -]{1,30}:\s")
_RFC822 = re.compile(rb"message/rfc822", re.I)
_MAILTO = re.compile(r"^(.*?)\s*\[mailto:([^\]\s]+)\]\s*$", re.I)


@dataclass(frozen=True)
class Original:
    """The original sender of a forwarded message, and how emaild found it."""

    addr: str
    name: str
    how: str  # "inline gmail/thunderbird", "inline outlook", ..., "attached message/rfc822"


def find_original(text: str, raw: bytes) -> Original | None:
    """The original sender of a forward: inline block first, then an attached message."""
    return _inline(text) or _attached(raw)


def _inline(text: str) -> Original | None:
    lines = [_unquote(line) for line in text.splitlines()[:MAX_SCAN_LINES]]
    for index, line in enumerate(lines):
        client = next((name for name, marker in _MARKERS if marker.match(line)), None)
        if client is None:
            continue
        found = _from_block(lines[index + 1 : index + 1 + MAX_HEADER_LINES])
        if found is not None:
            return Original(found[0], found[1], f"inline {client}")
    return None


def _from_block(block: list[str]) -> tuple[str, str] | None:
    started = False
    for line in block:
        if not line:
            if started:
                return None  # the header block ended without a From
            continue
        match = _FROM.match(line)
        if match:
            return _address(match.group(1))
        if not _HEADERISH.match(line):
            return None
        started = True
    return None


def _address(value: str) -> tuple[str, str] | None:
    mailto = _MAILTO.match(value.strip())
    if mailto:
        name, addr = mailto.group(1).strip(' "'), mailto.group(2)
    else:
        pairs = getaddresses([value])
        if not pairs:
            return None
        name, addr = pairs[0]
    addr = addr.strip().lower()
    local, at, domain = addr.rpartition("@")
    if not at or not local or "." not in domain or " " in addr:
        return None  # Outlook sometimes shows only a display name
    return addr, name.strip()


def _unquote(line: str) -> str:
    line = line.strip()
    while line.startswith(">"):
        line = line[1:].lstrip()
    return line


def _attached(raw: bytes) -> Original | None:
    if not _RFC822.search(raw):
        return None  # no attached message: skip parsing the whole message again
    # Parsed as ``parse`` does: large parts hashed away, text bodies cut, so a
    # big message costs no more here than there.
    skeleton = spool_large_parts(raw, _SPOOL_THRESHOLD, HashOnlySink()).skeleton
    message = email.message_from_bytes(skeleton, policy=email.policy.compat32)
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            break
        if part.get_content_type() != "message/rfc822":
            continue
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            found = _address(str(inner[0].get("From", "")))
            if found is not None:
                return Original(found[0], found[1], "attached message/rfc822")
    return None
