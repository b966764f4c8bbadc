"""Parsing details that protect later stages: addresses, identifiers, headers."""

from __future__ import annotations

from emaild.mime.parse import parse_message


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    return parse_message(raw, spool_threshold=1 << 20)


def test_encoded_word_cannot_smuggle_an_address() -> None:
    raw = (
        b"From: =?utf-8?q?X=0D=0ABcc=3A_victim@evil.test?= <real@customer.test>\r\n"
        b"To: =?utf-8?q?J=C3=B6rg?= <j@example.com>, b@example.com\r\n"
        b"Reply-To: =?utf-8?q?=3Cother@evil.test=3E?=\r\n"
        b"Subject: s\r\n\r\nbody\r\n"
    )
    p = parse(raw)
    assert p.from_ is not None
    assert p.from_.addr == "real@customer.test"
    assert "\n" not in p.from_.name and "\r" not in p.from_.name
    assert [a.addr for a in p.to] == ["j@example.com", "b@example.com"]
    assert p.to[0].name == "Jörg"
    assert p.reply_to is None


def test_utf8_headers_are_decoded() -> None:
    raw = "From: Jöhn <jöhn@example.com>\r\nSubject: Säying hello\r\n\r\nb\r\n".encode()
    p = parse(raw)
    assert p.subject == "Säying hello"
    assert p.from_ is not None and p.from_.name == "Jöhn"


def test_message_ids_are_normalised() -> None:
    raw = (
        b"From: a@b.test\r\nMessage-ID:   <abc@b.test> (comment)\r\n"
        b"In-Reply-To: <p1@b.test> <p2@b.test>\r\n"
        b"References: <r1@b.test>\r\n <r2@b.test>\r\nSubject: s\r\n\r\nb\r\n"
    )
    p = parse(raw)
    assert p.message_id == "<abc@b.test>"
    assert p.in_reply_to == "<p1@b.test>"
    assert p.references == ["<r1@b.test>", "<r2@b.test>"]
    assert p.dedup_key == "mid:<abc@b.test>"


def test_nul_bytes_never_reach_the_database() -> None:
    raw = (
        b"From: a@b.test\r\nSubject: s\r\nX-Odd: a\x00b\r\n"
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"before=00after\r\n"
    )
    p = parse(raw)
    assert "\x00" not in p.text and "before\ufffdafter" in p.text
    assert all("\x00" not in v for _, v in p.headers)
