"""Issue 18 §4: a message whose bulk is a text body costs bounded memory to parse.

A text body (plain, quoted-printable, base64 text, HTML; the message's own
body or a MIME part) beyond the text budget reaches the parser cut to the
budget; the whole part, decoded, is stored as an attachment, and the raw
message stays byte-exact. Small budgets here keep the messages small.
"""

from __future__ import annotations

import base64
import hashlib
import quopri
import tracemalloc
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from pathlib import Path

import pytest
from sqlalchemy import select

from emaild.app import App
from emaild.mime.forwarded import find_original
from emaild.mime.parse import parse_message
from emaild.mime.spool import MARKER_PREFIX
from emaild.pipeline import Envelope, Outcome
from emaild.store.blobs import FileBlobStore
from emaild.store.models import Attachment
from emaild.store.models import Message as MessageRow

MiB = 1024 * 1024
BUDGET = 64 * 1024
THRESHOLD = 256 * 1024
HEAD = (
    "From: writer@customer.test\r\nTo: support@example.com\r\nSubject: long story\r\n"
    "Message-ID: <long-{n}@customer.test>\r\nMIME-Version: 1.0\r\n"
)


def story(size: int) -> str:
    """About ``size`` bytes of UTF-8 text with non-ASCII characters on every line."""
    lines, total, n = [], 0, 0
    while total < size:
        line = f"Zeile {n}: Grüße aus Köln, ça va, 日本語のテキスト, naïve café {n * 7919}"
        lines.append(line)
        total += len(line.encode()) + 2
        n += 1
    return "\r\n".join(lines) + "\r\n"


def encode(text: str, cte: str) -> bytes:
    data = text.encode()
    if cte == "quoted-printable":
        return quopri.encodestring(data.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    if cte == "base64":
        return base64.encodebytes(data).replace(b"\n", b"\r\n")
    return data


def single(ctype: str, cte: str, body: bytes, n: int = 0) -> bytes:
    return (
        HEAD.format(n=n) + f"Content-Type: {ctype}; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
    ).encode() + body


def alternative(plain: bytes, html: bytes) -> bytes:
    return (
        (
            HEAD.format(n=9) + 'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
            "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        + plain
        + b"\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + html + b"\r\n--alt--\r\n"
    )


def lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def leaves(raw: bytes) -> list[Message]:
    return [p for p in message_from_bytes(raw, policy=compat32).walk() if not p.is_multipart()]


def decoded(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


SHAPES = [
    ("text/plain", "8bit"),
    ("text/plain", "quoted-printable"),
    ("text/plain", "base64"),
    ("text/html", "quoted-printable"),
    ("text/html", "7bit"),
]


@pytest.mark.parametrize(("ctype", "cte"), SHAPES)
def test_a_long_body_is_cut_and_stored_whole(ctype: str, cte: str, tmp_path: Path) -> None:
    text = story(600 * 1024)
    if ctype == "text/html":
        text = "<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>\r\n"
    if cte == "7bit":
        text = text.encode("ascii", "xmlcharrefreplace").decode()
    raw = single(ctype, cte, encode(text, cte))
    blobs = FileBlobStore(tmp_path / "blobs")
    parsed = parse_message(raw, spool_threshold=THRESHOLD, sink=blobs, text_budget=BUDGET)

    whole = decoded(leaves(raw)[0])
    [body] = parsed.attachments
    assert body.filename == ("body.html" if ctype == "text/html" else "body.txt")
    assert body.content_type == f"{ctype}; charset=utf-8"
    assert blobs.read(body.sha256) == whole  # the whole part, decoded, byte-exact
    assert body.size == len(whole)
    kept = parsed.html if ctype == "text/html" else parsed.text
    assert 0.5 * BUDGET < len(kept.encode()) <= BUDGET  # its beginning, no more
    assert lf(whole.decode()).startswith(lf(kept))  # whole lines, no U+FFFD
    assert "\ufffd" not in kept
    if ctype == "text/html":
        assert "Zeile 0:" in parsed.text  # the text is still derived from the kept HTML
    [note] = parsed.truncated
    assert f"text body over {BUDGET} bytes" in note and body.filename in note
    assert note in parsed.defects


def test_a_message_within_the_budget_is_parsed_whole() -> None:
    raw = single("text/plain", "quoted-printable", encode(story(BUDGET // 2), "quoted-printable"))
    parsed = parse_message(raw, spool_threshold=1024, text_budget=BUDGET)
    assert parsed.attachments == [] and parsed.truncated == []
    assert lf(parsed.text) == lf(decoded(leaves(raw)[0]).decode())


def test_the_budget_is_shared_by_all_text_parts(tmp_path: Path) -> None:
    plain = encode(story(300 * 1024), "quoted-printable")
    html = ("<p>" + story(300 * 1024) + "</p>").encode()
    raw = alternative(plain, html)
    blobs = FileBlobStore(tmp_path / "blobs")
    parsed = parse_message(raw, spool_threshold=THRESHOLD, sink=blobs, text_budget=BUDGET)
    parts = leaves(raw)
    names = {a.filename: a for a in parsed.attachments}
    assert sorted(names) == ["body-2.html", "body.txt"]
    assert blobs.read(names["body.txt"].sha256) == decoded(parts[0])
    assert blobs.read(names["body-2.html"].sha256) == decoded(parts[1])
    # The first part took all of the budget; the second kept nothing.
    assert 0.5 * BUDGET < len(parsed.text.encode()) <= BUDGET
    assert parsed.html == ""
    assert len(parsed.truncated) == 2


def test_a_large_attachment_in_any_transfer_encoding_is_streamed(tmp_path: Path) -> None:
    log = story(400 * 1024)
    raw = (
        (
            HEAD.format(n=3) + 'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
            "--m\r\nContent-Type: text/plain\r\n\r\nthe log is attached\r\n"
            '--m\r\nContent-Type: text/plain; charset=utf-8; name="app.log"\r\n'
            'Content-Disposition: attachment; filename="app.log"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ).encode()
        + encode(log, "quoted-printable")
        + b"\r\n--m--\r\n"
    )
    blobs = FileBlobStore(tmp_path / "blobs")
    spooled = parse_message(raw, spool_threshold=THRESHOLD, sink=blobs, text_budget=BUDGET)
    whole = parse_message(raw, spool_threshold=1 << 30, text_budget=1 << 30)
    assert spooled.attachments == whole.attachments
    assert spooled.text == whole.text == "the log is attached"
    assert spooled.truncated == []
    assert blobs.read(spooled.attachments[0].sha256) == log.encode()


def test_message_text_cannot_impersonate_a_cut_or_spooled_part(tmp_path: Path) -> None:
    fake = (MARKER_PREFIX + b"0" * 32 + b":0\r\n").decode()
    raw = single("text/plain", "8bit", (fake + story(200 * 1024)).encode())
    parsed = parse_message(raw, spool_threshold=THRESHOLD, text_budget=BUDGET)
    assert parsed.text.startswith(fake.rstrip("\r\n"))
    assert [a.filename for a in parsed.attachments] == ["body.txt"]


def test_the_case_keeps_the_cut_text_and_the_whole_body(app: App) -> None:
    text = story(700 * 1024)
    raw = single("text/plain", "quoted-printable", encode(text, "quoted-printable"), n=5)
    budget = 512 * 1024  # the default
    result = app.pipeline.ingest(raw, Envelope(channel="test", mail_from="writer@customer.test"))
    assert result.outcome is Outcome.NEW_CASE
    with app.db.session() as s:
        row = s.scalars(select(MessageRow)).one()
        attachment = s.scalars(select(Attachment)).one()
        kept, trace, defects = row.text, row.decision_trace, row.defects
    assert 0.5 * budget < len(kept.encode()) <= budget
    assert lf(text).startswith(lf(kept))
    assert attachment.filename == "body.txt"
    assert app.blobs.read(attachment.sha256) == text.encode()
    assert app.blobs.read(hashlib.sha256(raw).hexdigest()) == raw
    assert any(d["decision"] == "text body truncated" for d in trace)
    assert any("whole part" in d for d in defects)


def test_an_attached_forward_is_found_in_a_big_message_without_parsing_it_whole() -> None:
    forward = (Path(__file__).parent / "forwarded" / "attached.eml").read_bytes()
    note = b"See the attached message from the customer.\r\n"
    inner = b"The printer in room 4 is on fire.\r\n"
    raw = forward.replace(note, note + story(3 * MiB).encode()).replace(
        inner, inner + story(3 * MiB).encode()
    )
    parsed = parse_message(raw, spool_threshold=THRESHOLD)
    # The agent's note and the attached message's body: each cut, each stored whole.
    assert len(parsed.truncated) == 2
    assert [a.filename for a in parsed.attachments][-2:] == ["body.txt", "body-2.txt"]
    tracemalloc.start()
    try:
        found = find_original(parsed.text, raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found is not None and found.addr == "carol@customer.test"
    # Parsed whole, 6 MiB of text cost over 40 MiB; the cut skeleton costs what
    # 512 KiB of text does, whatever the message's size.
    assert peak < 10 * MiB, f"{peak / MiB:.1f} MiB for a message of {len(raw) / MiB:.1f} MiB"


def test_only_declared_boundaries_split_parts(tmp_path: Path) -> None:
    # A text body quoting MIME (a bounce, a developer's question) is one body,
    # however much it looks like parts; a last part without its closing
    # delimiter still runs to the end of the message.
    quoted = (
        'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\n'
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"\x00" * 300_000).decode().replace("\n", "\r\n")
        + "--zz--\r\n"
    )
    raw = single("text/plain", "7bit", quoted.encode())
    parsed = parse_message(raw, spool_threshold=64 * 1024, text_budget=1 << 20)
    assert parsed.attachments == [] and parsed.text == quoted
    unclosed = (
        HEAD.format(n=4) + 'Content-Type: multipart/mixed; boundary="u"\r\n\r\n--u\r\n'
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + story(200 * 1024).encode()
    blobs = FileBlobStore(tmp_path / "blobs")
    parsed = parse_message(unclosed, spool_threshold=THRESHOLD, sink=blobs, text_budget=BUDGET)
    [body] = parsed.attachments
    assert blobs.read(body.sha256) == decoded(leaves(unclosed)[0])
    assert len(parsed.text.encode()) <= BUDGET
