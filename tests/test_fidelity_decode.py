"""Issue 20, classes 1-3 and 6: text stored as the person wrote it, whatever the label says.

Each case is a whole message; the check reads what is stored: subject, customer
address and name, text, and the bytes of every attachment.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from emaild.mime.parse import ParsedMessage, parse_message


class MemorySink:
    """A blob store in memory: attachment bytes by SHA-256."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put_chunks(self, chunks: Iterator[bytes]) -> tuple[str, int]:
        data = b"".join(chunks)
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return sha, len(data)


@dataclass
class Case:
    raw: bytes
    subject: str
    customer: str
    text: str  # must appear in the stored text
    name: str = ""  # customer display name, when checked
    attachments: dict[str, bytes] = field(default_factory=dict)
    defect: str = ""  # must appear in one recorded defect


def check(case: Case) -> ParsedMessage:
    sink = MemorySink()
    parsed = parse_message(case.raw, spool_threshold=1 << 20, sink=sink)
    assert parsed.subject == case.subject
    assert parsed.customer_addr == case.customer
    if case.name:
        assert parsed.customer is not None and parsed.customer.name == case.name
    assert case.text in parsed.text, parsed.text
    assert "\ufffd" not in parsed.text + parsed.subject
    stored = {a.filename: sink.blobs[a.sha256] for a in parsed.attachments}
    assert stored == case.attachments
    if case.defect:
        assert any(case.defect in d for d in parsed.defects), parsed.defects
    return parsed


def b64word(text: str, charset: str, codec: str | None = None) -> bytes:
    data = base64.b64encode(text.encode(codec or charset)).decode()
    return f"=?{charset}?B?{data}?=".encode()


def mail(head: bytes, body: bytes, ctype: bytes = b"text/plain", cte: bytes = b"8bit") -> bytes:
    return (
        head + b"MIME-Version: 1.0\r\nContent-Type: " + ctype + b"\r\n"
        b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + body
    )


ASCII = b"text/plain; charset=us-ascii"
UTF8 = b"text/plain; charset=utf-8"
PDF = b"%PDF-1.4\n\x00\x01\x02\xff binary \x80\x9f"

LABELS = [
    # GB2312 label, GBK bytes (镕 is not in GB2312): subject and body.
    Case(
        mail(
            b"From: a@cn.test\r\nSubject: " + b64word("朱镕基 你好", "gb2312", "gbk") + b"\r\n",
            "朱镕基先生，你好。".encode("gbk"),
            b"text/plain; charset=gb2312",
        ),
        "朱镕基 你好",
        "a@cn.test",
        "朱镕基先生，你好。",
    ),
    # ks_c_5601-1987 label, CP949 bytes (똠 is not in EUC-KR): display name and body.
    Case(
        mail(
            b"From: " + b64word("똠방각하", "ks_c_5601-1987", "cp949") + b" <k@kr.test>\r\n"
            b"Subject: " + b64word("안녕 똠", "euc-kr", "cp949") + b"\r\n",
            "똠방각하 안녕하세요".encode("cp949"),
            b"text/plain; charset=euc-kr",
        ),
        "안녕 똠",
        "k@kr.test",
        "똠방각하 안녕하세요",
        name="똠방각하",
    ),
    # ISO-8859-1 label with Windows-1252 bytes 0x80-0x9f: body and attachment file name.
    Case(
        (
            b"From: =?iso-8859-1?q?Ren=E9_=93R=94?= <r@fr.test>\r\nSubject: =?iso-8859-1?q?"
            b"Prix_=80_10?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
            b"\r\n--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
            b"Co\xfbt: 10 \x80 \x93net\x94\r\n--b\r\nContent-Type: application/pdf\r\n"
            b'Content-Disposition: attachment; filename="=?iso-8859-1?q?Re=E7u_=80.pdf?="\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(PDF) + b"\r\n--b--\r\n"
        ),
        "Prix € 10",
        "r@fr.test",
        "Coût: 10 € “net”",
        name="René “R”",
        attachments={"Reçu €.pdf": PDF},
    ),
    # Shift_JIS label, CP932 bytes (① is an NEC extension).
    Case(
        mail(
            b"From: j@jp.test\r\nSubject: " + b64word("会議①", "shift_jis", "cp932") + b"\r\n",
            "①議題の確認".encode("cp932"),
            b"text/plain; charset=Shift_JIS",
        ),
        "会議①",
        "j@jp.test",
        "①議題の確認",
    ),
    # Big5 label, HKSCS bytes; TIS-620 label, CP874 bytes (ellipsis and euro).
    Case(
        mail(
            b"From: h@hk.test\r\nSubject: " + b64word("裏恒着", "big5", "big5hkscs") + b"\r\n",
            "峯嫺栢".encode("big5hkscs"),
            b"text/plain; charset=big5",
        ),
        "裏恒着",
        "h@hk.test",
        "峯嫺栢",
    ),
    Case(
        mail(
            b"From: t@th.test\r\nSubject: " + b64word("สวัสดี…", "tis-620", "cp874") + b"\r\n",
            "ราคา 10€…".encode("cp874"),
            b"text/plain; charset=TIS-620",
        ),
        "สวัสดี…",
        "t@th.test",
        "ราคา 10€…",
    ),
]


@pytest.mark.parametrize("case", LABELS)
def test_labels_that_lie_decode_with_the_superset(case: Case) -> None:
    check(case)


def _jis_nec_circled_one() -> bytes:
    # ESC $ B, row 13 cell 1 (NEC ①, not in JIS X 0208), then "です" and back to ASCII.
    return b"\x1b$B-!\x1b(B " + "です".encode("iso2022_jp")


SEVEN_BIT = [
    Case(
        mail(
            b"From: j@jp.test\r\nSubject: =?ISO-2022-JP?B?"
            + base64.b64encode("すみません".encode("iso2022_jp"))
            + b"?=\r\n",
            "すみません。\r\n".encode("iso2022_jp"),
            b"text/plain; charset=ISO-2022-JP",
            b"7bit",
        ),
        "すみません",
        "j@jp.test",
        "すみません。",
    ),
    Case(
        mail(
            b"From: j@jp.test\r\nSubject: x\r\n",
            _jis_nec_circled_one(),
            b"text/plain; charset=iso-2022-jp",
            b"7bit",
        ),
        "x",
        "j@jp.test",
        "① です",
    ),
    Case(
        mail(
            b"From: u@x.test\r\nSubject: y\r\n",
            "Hi Mom ☺!".encode("utf-7"),
            b"text/plain; charset=utf-7",
            b"7bit",
        ),
        "y",
        "u@x.test",
        "Hi Mom ☺!",
    ),
    Case(
        mail(
            b"From: c@x.test\r\nSubject: z\r\n",
            "己所不欲".encode("hz"),
            b"text/plain; charset=HZ-GB-2312",
            b"7bit",
        ),
        "z",
        "c@x.test",
        "己所不欲",
    ),
]


@pytest.mark.parametrize("case", SEVEN_BIT)
def test_seven_bit_stateful_charsets_are_decoded(case: Case) -> None:
    check(case)


RUSSIAN = "Здравствуйте! Пожалуйста, пришлите счёт за прошлый месяц. Спасибо."

UNDECLARED = [
    # 8-bit Shift_JIS subject and name: the body's declared charset is the hint.
    Case(
        b"From: "
        + "山田".encode("cp932")
        + b" <y@jp.test>\r\nSubject: "
        + "請求書について".encode("cp932")
        + b"\r\nContent-Type: text/plain; charset=shift_jis\r\n\r\n"
        + "よろしく".encode("cp932"),
        "請求書について",
        "y@jp.test",
        "よろしく",
        name="山田",
        defect="cp932 (hint from the message)",
    ),
    # Nothing declared but Content-Language: ru.
    Case(
        b"From: i@ru.test\r\nSubject: " + "Счёт".encode("cp1251") + b"\r\n"
        b"Content-Language: ru\r\n\r\n" + RUSSIAN.encode("cp1251"),
        "Счёт",
        "i@ru.test",
        RUSSIAN,
        defect="cp1251 (hint from the message)",
    ),
    # No hint at all: the detector's guess, recorded.
    Case(
        b"From: i@ru.test\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\n"
        + RUSSIAN.encode("koi8_r"),
        "s",
        "i@ru.test",
        RUSSIAN,
        defect="charset-normalizer",
    ),
    # "us-ascii" with 8-bit UTF-8 bytes.
    Case(
        mail(
            b"From: u@x.test\r\nSubject: s\r\n", "Grüße".encode(), b"text/plain; charset=us-ascii"
        ),
        "s",
        "u@x.test",
        "Grüße",
        defect="decoded as utf-8",
    ),
]


@pytest.mark.parametrize("case", UNDECLARED)
def test_undeclared_8bit_uses_hints_then_a_recorded_guess(case: Case) -> None:
    check(case)


def test_clean_declared_mail_never_records_a_guess() -> None:
    parsed = check(
        Case(
            mail(
                b"From: a@x.test\r\nSubject: s\r\n", "Grüße".encode(), b"text/plain; charset=utf-8"
            ),
            "s",
            "a@x.test",
            "Grüße",
        )
    )
    assert parsed.defects == []


def _stray(encoded: bytes) -> bytes:
    """Base64 without its padding and with stray non-alphabet bytes (8-bit too) inside."""
    return encoded[:8] + b"!\xe9*" + encoded[8:]


BROKEN = [
    # Bad padding and stray characters in a base64 attachment and a base64 body.
    Case(
        b"From: a@x.test\r\nSubject: pad\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n" + base64.b64encode("héllo wörld".encode()).rstrip(b"=") + b"\r\n--b\r\n"
        b"Content-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + _stray(base64.b64encode(PDF).rstrip(b"="))
        + b"\r\n--b--\r\n",
        "pad",
        "a@x.test",
        "héllo wörld",
        attachments={"a.pdf": PDF},
        defect="InvalidBase64",
    ),
    # An encoded word with bad base64, and an unknown charset on a word and on the body.
    Case(
        b"From: =?x-bogus?Q?J=C3=B6rg?= <j@x.test>\r\n"
        b"Subject: =?utf-8?B?w7xiZXI?= =?utf-8?B?!!?=\r\n"
        b"Content-Type: text/plain; charset=x-nonsense\r\n\r\n" + "Jörg".encode(),
        "über",
        "j@x.test",
        "Jörg",
        name="Jörg",
        defect="unusable",
    ),
    # Embedded NUL in a header and in a quoted-printable body: kept, not quarantined.
    Case(
        b"From: a@x.test\r\nSubject: a\x00b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nvor=00nach =C3=BC\r\n",
        "ab",
        "a@x.test",
        "vor",
    ),
]


@pytest.mark.parametrize("case", BROKEN)
def test_broken_encodings_are_repaired_not_quarantined(case: Case) -> None:
    parsed = parse_message(case.raw, spool_threshold=1 << 20)
    assert parsed.subject == case.subject
    if b"\x00" not in case.raw:
        check(case)
    else:
        assert "vor\ufffdnach ü" in parsed.text
