"""Issue 20, classes 4, 5, 7, 9 and 11, and display names with ":" or "@" (hardening)."""

from __future__ import annotations

import base64

import pytest
from test_fidelity_decode import PDF, Case, check, mail

from emaild.errors import InputError
from emaild.mime.parse import parse_message

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
MP3 = b"ID3\x03\x00\x00\x00" + bytes(range(255, -1, -1))
PS = b"%!PS-Adobe-3.0\n%%Title: x\nshowpage\n"

FOLDING = [
    # A gateway's tracker header folded without indentation, before From and Subject.
    Case(
        b"Received: from gw by mx; Mon, 3 Jun 2024 10:00:00 +0000\r\n"
        b"X-Gateway-Tracker: 0123456789abcdef0123456789abcdef\r\n"
        b"fedcba9876543210fedcba9876543210\r\n"
        b"From: Anna <anna@customer.test>\r\nSubject: Invoice 42\r\n\r\nPlease pay.\r\n",
        "Invoice 42",
        "anna@customer.test",
        "Please pay.",
        name="Anna",
        defect="1 unindented continuation",
    ),
    # Several unindented lines, the last one right before the blank line after a field.
    Case(
        b"From: b@x.test\r\nX-Spam-Tracker: a=1;\r\nb=2;\r\nc=3\r\n"
        b"Subject: Hello\r\nX-Other: z\r\n\r\nBody text\r\n",
        "Hello",
        "b@x.test",
        "Body text",
        defect="2 unindented continuation",
    ),
    # A line that is not a valid field name (a space in it) between fields.
    Case(
        b"Subject: Order\r\nX-Broken: first part\r\nsecond part: with colon\r\n"
        b"From: c@x.test\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",
        "Order",
        "c@x.test",
        "Grüße",
        defect="unindented continuation",
    ),
]


@pytest.mark.parametrize("case", FOLDING)
def test_unindented_continuation_lines_keep_the_header_block(case: Case) -> None:
    parsed = check(case)
    assert "From:" not in parsed.text and "Subject:" not in parsed.text


JUNK = [
    Case(
        b"---- Original email message ----\r\nFrom: d@x.test\r\nSubject: Fwd\r\n\r\nHi\r\n",
        "Fwd",
        "d@x.test",
        "Hi",
        defect="skipped 1 line",
    ),
    Case(
        b"\r\n=== forwarded by gateway ===\r\n\r\nSubject: Two\r\nFrom: e@x.test\r\n\r\nBody\r\n",
        "Two",
        "e@x.test",
        "Body",
        defect="skipped 3 line",
    ),
    Case(
        b">>> message follows\nFrom: f@x.test\nTo: s@example.com\nSubject: Three\n\nText\n",
        "Three",
        "f@x.test",
        "Text",
        defect="skipped 1 line",
    ),
]


@pytest.mark.parametrize("case", JUNK)
def test_junk_lines_before_the_header_block_are_skipped(case: Case) -> None:
    check(case)


@pytest.mark.parametrize(
    "raw",
    [
        b"just some text\r\nwith no header at all\r\n",
        b"junk line\r\nFrom: a@x.test\r\nand then prose, no second field\r\n",
    ],
)
def test_fragments_without_a_header_block_are_still_refused(raw: bytes) -> None:
    with pytest.raises(InputError):
        parse_message(raw, spool_threshold=1 << 20)


def _mixed(ctype: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    out = b"From: g@x.test\r\nSubject: parts\r\nContent-Type: " + ctype + b"; boundary=zz\r\n\r\n"
    out += b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the parts.\r\n"
    for part_type, data in parts:
        out += b"--zz\r\nContent-Type: " + part_type + b"\r\nContent-Transfer-Encoding: base64\r\n"
        out += b"\r\n" + base64.encodebytes(data) + b"\r\n"
    return out + b"--zz--\r\n"


UNNAMED = [
    Case(
        _mixed(b"multipart/mixed", [(b"audio/mpeg", MP3)]),
        "parts",
        "g@x.test",
        "See the parts.",
        attachments={"part-2.mp3": MP3},
    ),
    Case(
        _mixed(b"multipart/digest", [(b"image/png", PNG), (b"application/postscript", PS)]),
        "parts",
        "g@x.test",
        "See the parts.",
        attachments={"part-2.png": PNG, "part-3.ps": PS},
    ),
    Case(
        _mixed(b"multipart/mixed", [(b"application/octet-stream", PDF), (b"image/png", PNG)]),
        "parts",
        "g@x.test",
        "See the parts.",
        attachments={"part-2.bin": PDF, "part-3.png": PNG},
    ),
]


@pytest.mark.parametrize("case", UNNAMED)
def test_every_non_text_leaf_is_an_attachment(case: Case) -> None:
    parsed = check(case)
    assert all(a.disposition == "attachment" for a in parsed.attachments)


REPLY_TO = [
    Case(
        b"Reply-To: Hans <hans@customer.test>\r\nSubject: no from\r\n\r\nx\r\n",
        "no from",
        "hans@customer.test",
        "x",
        name="Hans",
    ),
    Case(
        b"From: undisclosed-recipients:;\r\nReply-To: r@customer.test\r\n"
        b"Subject: group\r\n\r\ny\r\n",
        "group",
        "r@customer.test",
        "y",
    ),
    Case(
        b"From: Webform\r\nReply-To: =?utf-8?q?J=C3=B6rg?= <joerg@customer.test>\r\n"
        b"Subject: form\r\n\r\nz\r\n",
        "form",
        "joerg@customer.test",
        "z",
        name="Jörg",
    ),
]


@pytest.mark.parametrize("case", REPLY_TO)
def test_reply_to_is_the_customer_without_a_usable_from(case: Case) -> None:
    parsed = check(case)
    assert parsed.from_addr == ""


def test_from_stays_the_customer_when_there_is_one() -> None:
    raw = b"From: a@x.test\r\nReply-To: b@x.test\r\nSubject: s\r\n\r\nt\r\n"
    assert parse_message(raw, spool_threshold=1 << 20).customer_addr == "a@x.test"


HTML_ONLY = [
    Case(
        mail(
            b"From: h@x.test\r\nSubject: html\r\n",
            b"<html><head><style>p{color:red}</style></head><body><p>Hello <b>there</b>,</p>"
            b"<ul><li>first</li><li>second</li></ul><p>Bye &amp; thanks</p></body></html>",
            b"text/html; charset=utf-8",
        ),
        "html",
        "h@x.test",
        "Hello there,",
        defect="text derived from the HTML",
    ),
    Case(
        mail(
            b"From: h@x.test\r\nSubject: cp\r\n",
            b"<div>Preis: 10 \x80</div><div>Gr\xfc\xdfe</div>",
            b"text/html; charset=windows-1252",
        ),
        "cp",
        "h@x.test",
        "Preis: 10 €\nGrüße",
    ),
    Case(
        mail(
            b"From: h@x.test\r\nSubject: b64\r\n",
            base64.encodebytes(
                b'<?xml version="1.0" encoding="utf-8"?><table><tr><td>A</td>'
                b"<td>B</td></tr></table><a href='http://x.test'>link</a>"
            ),
            b"text/html; charset=utf-8",
            b"base64",
        ),
        "b64",
        "h@x.test",
        "link",
    ),
]


@pytest.mark.parametrize("case", HTML_ONLY)
def test_html_only_mail_gets_its_text_from_the_html(case: Case) -> None:
    parsed = check(case)
    assert "<" not in parsed.text and parsed.html


def test_a_text_part_is_preferred_over_the_html() -> None:
    raw = (
        b"From: a@x.test\r\nSubject: alt\r\nContent-Type: multipart/alternative; boundary=q\r\n\r\n"
        b"--q\r\nContent-Type: text/plain\r\n\r\nplain words\r\n"
        b"--q\r\nContent-Type: text/html\r\n\r\n<p>html words</p>\r\n--q--\r\n"
    )
    parsed = parse_message(raw, spool_threshold=1 << 20)
    assert parsed.text.strip() == "plain words" and "html words" in parsed.html


NAMES = [
    Case(
        b"From: =?utf-8?q?Info:_sales@firma.example?= <real@firma.example>\r\nSubject: a\r\n\r\nx",
        "a",
        "real@firma.example",
        "x",
        name="Info: sales@firma.example",
    ),
    Case(
        b"From: =?utf-8?q?M=C3=BCller=2C_Hans?= <h@x.test>\r\nSubject: b\r\n\r\nx",
        "b",
        "h@x.test",
        "x",
        name="Müller, Hans",
    ),
    Case(
        b'From: "=?utf-8?b?U2FsZXM6IDxzQGV2aWwudGVzdD4=?=" <ok@x.test>\r\nSubject: c\r\n\r\nx',
        "c",
        "ok@x.test",
        "x",
        name="Sales: <s@evil.test>",
    ),
]


@pytest.mark.parametrize("case", NAMES)
def test_encoded_display_names_cannot_change_the_address(case: Case) -> None:
    parsed = check(case)
    assert parsed.to == [] and parsed.from_ is not None
