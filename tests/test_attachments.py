"""Attachments: decoded names, bytes identical to the MIME part, big ones streamed."""

from __future__ import annotations

import base64
import hashlib
import os
from email import message_from_bytes
from email.message import Message as EmailMessage
from email.policy import compat32
from pathlib import Path

import pytest
from sqlalchemy import select

from emaild.app import App
from emaild.mime.parse import parse_message
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Attachment

NAMES = [
    ("mikel-mail/attachment_emails/attachment_nonascii_filename.eml", "ciële.txt"),
    ("mikel-mail/attachment_emails/attachment_with_base64_encoded_name.eml", "This is a test.pdf"),
    ("mikel-mail/attachment_emails/attachment_with_quoted_filename.eml", "Eelanalüüsi päring.jpg"),
    ("mikel-mail/attachment_emails/attachment_with_unquoted_name.eml", "This is a test.txt"),
    ("mikel-mail/multi_charset/japanese_attachment.eml", "てすと.txt"),
    (
        "mikel-mail/multi_charset/japanese_attachment_long_name.eml",
        "かきくけこかきくけこかきくけこかきくけこかきくけこ.txt",
    ),
]


@pytest.mark.parametrize(("name", "expected"), NAMES)
def test_names_are_decoded_from_rfc2047_and_rfc2231(corpus: Path, name: str, expected: str) -> None:
    parsed = parse_message((corpus / name).read_bytes(), spool_threshold=1 << 20)
    assert expected in [a.filename for a in parsed.attachments]


def leaf_payloads(message: EmailMessage) -> set[str]:
    out = set()
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            out.add(hashlib.sha256(payload).hexdigest())
    return out


def attachment_files(corpus: Path) -> list[Path]:
    return sorted((corpus / "mikel-mail" / "attachment_emails").glob("*.eml")) + sorted(
        (corpus / "mikel-mail" / "multi_charset").glob("*attachment*.eml")
    )


def test_stored_bytes_equal_the_decoded_mime_part(app: App, corpus: Path) -> None:
    checked = 0
    for path in attachment_files(corpus):
        raw = path.read_bytes()
        # Several corpus files share a Message-ID; parse each one as the pipeline does.
        parsed = parse_message(
            raw, spool_threshold=app.config.limits.spool_part_bytes, sink=app.blobs
        )
        expected = leaf_payloads(message_from_bytes(raw, policy=compat32))
        for row in parsed.attachments:
            if row.content_type == "message/rfc822":
                continue  # a whole message, not a leaf payload
            data = app.blobs.read(row.sha256)
            assert len(data) == row.size
            assert hashlib.sha256(data).hexdigest() == row.sha256
            assert row.sha256 in expected, (path, row.filename)
            checked += 1
    assert checked >= 15


def test_identical_attachments_are_stored_once(app: App) -> None:
    body = base64.encodebytes(os.urandom(5000)).replace(b"\n", b"\r\n")

    def message(n: int) -> bytes:
        return (
            (
                f"From: a@customer.test\r\nTo: support@example.com\r\nSubject: s{n}\r\n"
                f"Message-ID: <same-att-{n}@customer.test>\r\nMIME-Version: 1.0\r\n"
                'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
                "Content-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
                'Content-Type: application/pdf; name="x.pdf"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n"
            ).encode()
            + body
            + b"--b--\r\n"
        )

    app.pipeline.ingest(message(1), Envelope())
    app.pipeline.ingest(message(2), Envelope())
    with app.db.session() as s:
        shas = s.scalars(select(Attachment.sha256)).all()
    assert len(shas) == 2 and shas[0] == shas[1]
    blob_files = [p for p in app.blobs.root.rglob("*") if p.is_file() and p.parent.name != "tmp"]
    assert sum(1 for p in blob_files if p.name == shas[0]) == 1


def big_message(payload: bytes) -> bytes:
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        b"From: big@customer.test\r\nTo: support@example.com\r\nSubject: logs\r\n"
        b"Message-ID: <big@customer.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n"
        b'--outer\r\nContent-Type: application/x-tar; name="logs.tar"\r\n'
        b'Content-Disposition: attachment; filename="logs.tar"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--outer--\r\n"
    )


def test_25_mb_attachment_round_trips(app: App) -> None:
    payload = os.urandom(25 * 1024 * 1024)
    raw = big_message(payload)
    assert len(raw) < app.config.limits.max_message_bytes
    result = app.pipeline.ingest(raw, Envelope(channel="test"))
    assert result.outcome is Outcome.NEW_CASE
    with app.db.session() as s:
        row = s.scalars(select(Attachment)).one()
    assert row.filename == "logs.tar"
    assert row.size == len(payload)
    assert row.sha256 == hashlib.sha256(payload).hexdigest()
    assert hashlib.sha256(app.blobs.read(row.sha256)).hexdigest() == row.sha256


def test_spooled_and_in_memory_parsing_agree() -> None:
    payload = os.urandom(600_000)
    raw = big_message(payload)
    spooled = parse_message(raw, spool_threshold=64 * 1024)
    whole = parse_message(raw, spool_threshold=1 << 30)
    assert spooled.attachments == whole.attachments
    assert spooled.text == whole.text
    assert spooled.attachments[0].sha256 == hashlib.sha256(payload).hexdigest()


def test_message_text_cannot_impersonate_a_spooled_part() -> None:
    fake = base64.b64encode(b"emaild-spooled:0000:0").decode()
    raw = big_message(os.urandom(300_000)).replace(
        b"see attached",
        b"see attached\r\n--outer\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=f\r\n\r\n"
        + fake.encode(),
    )
    parsed = parse_message(raw, spool_threshold=64 * 1024)
    fake_part = [a for a in parsed.attachments if a.filename == "f"]
    assert fake_part and fake_part[0].sha256 == hashlib.sha256(b"emaild-spooled:0000:0").hexdigest()
