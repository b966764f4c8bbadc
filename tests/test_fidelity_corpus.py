"""Issue 20 on real mail: the whole shared corpus parses, and no U+FFFD appears in text
or subject that a correct decode (the stdlib's, where it succeeds) does not produce."""

from __future__ import annotations

import email
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from pathlib import Path

from test_corpus import corpus_files

from emaild.errors import InputError
from emaild.mime.parse import parse_message


def _stdlib_text(message: Message) -> str | None:
    """Text and HTML parts decoded strictly with their labels, or None if any fails."""
    out = []
    for part in message.walk():
        if part.get_content_type() not in ("text/plain", "text/html"):
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        try:
            out.append(data.decode(part.get_content_charset() or "ascii"))
        except (LookupError, UnicodeDecodeError):
            return None
    return "".join(out)


def _stdlib_subject(message: Message) -> str | None:
    raw = message.get("subject")
    if raw is None or not isinstance(raw, str) or not raw.isascii():
        return None
    try:
        return str(make_header(decode_header(raw)))
    except (LookupError, UnicodeError, ValueError):
        return None


def test_whole_corpus_parses_and_only_header_less_fragments_fail(corpus: Path) -> None:
    refused = []
    for path in corpus_files(corpus):
        try:
            parse_message(path.read_bytes(), spool_threshold=1 << 20)
        except InputError:
            refused.append(path.name)
    assert refused == ["example13.eml"]


def test_no_replacement_characters_a_correct_decode_would_not_give(corpus: Path) -> None:
    compared = 0
    bad = []
    for path in corpus_files(corpus):
        raw = path.read_bytes()
        try:
            parsed = parse_message(raw, spool_threshold=1 << 20)
        except InputError:
            continue
        message = email.message_from_bytes(raw, policy=compat32)
        text = _stdlib_text(message)
        # NUL (raw, or "=00" in quoted-printable) is stored as U+FFFD: PostgreSQL refuses it.
        if text is not None and "\ufffd" not in text and "\x00" not in text:
            compared += 1
            if "\ufffd" in parsed.text + parsed.html:
                bad.append(("text", path.name))
        subject = _stdlib_subject(message)
        if subject is not None and "\ufffd" not in subject and "\ufffd" in parsed.subject:
            bad.append(("subject", path.name))
    assert bad == []
    assert compared > 600
