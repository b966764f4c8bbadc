"""The auto-response composer against the stdlib's own composition of the same message.

``compose`` writes the wire bytes itself (the stdlib's header registry cost
more than the rest of ingestion). For every combination of hostile and
ordinary inputs below, a modern-policy parser must read from its bytes exactly
what it reads from the message ``email.message.EmailMessage`` builds from the
same inputs: the same headers, addresses, display names, parts and texts.
And the bytes must be safe to send: ASCII, CRLF, no line over 998 characters,
headers folded at 78 where the words allow, no header an input could add.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, compat32, default
from html import escape

import pytest

from emaild.autoresponse.compose import (
    MAX_REFERENCES,
    Reply,
    compose,
    usable_address,
    valid_msg_id,
)
from emaild.autoresponse.templates import Rendered
from emaild.classify import LOOP_HEADER

NOW = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(value: str, limit: int = 300) -> str:
    return " ".join(_CONTROLS.sub(" ", value).split())[:limit]


def reference(
    rendered: Rendered,
    *,
    from_name: str,
    from_address: str,
    reply: Reply,
    message_id: str,
    body_token: str,
) -> bytes:
    """The same auto-response, built with the stdlib's modern policy (the oracle)."""

    def cte(body: str) -> str:
        short = all(len(x) <= 998 for x in body.splitlines())
        return "7bit" if body.isascii() and short else "quoted-printable"

    msg = EmailMessage(policy=SMTP.clone(max_line_length=78))
    msg["From"] = Address(display_name=one_line(from_name), addr_spec=from_address)
    msg["To"] = Address(display_name=one_line(reply.to_name), addr_spec=reply.to_address)
    msg["Reply-To"] = Address(display_name=one_line(from_name), addr_spec=from_address)
    msg["Subject"] = one_line(rendered.subject, 900)
    msg["Date"] = NOW
    msg["Message-ID"] = message_id
    if valid_msg_id(reply.message_id):
        msg["In-Reply-To"] = reply.message_id
    refs = [r for r in reply.references if valid_msg_id(r)][-MAX_REFERENCES:]
    if valid_msg_id(reply.message_id) and reply.message_id not in refs:
        refs.append(reply.message_id)
    if refs:
        msg["References"] = " ".join(refs[-MAX_REFERENCES:])
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["Precedence"] = "bulk"
    msg[LOOP_HEADER] = from_address
    text, html = rendered.text, rendered.html
    if body_token:
        text = f"{text.rstrip()}\n\n{body_token}\n"
        if html:
            token = escape(body_token)
            html = f'{html.rstrip()}\n<p style="color:#999999;font-size:smaller">{token}</p>\n'
    msg.set_content(text, charset="utf-8", cte=cte(text))
    if html:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=cte(html))
    return msg.as_bytes()


NAMES = [
    "",
    "Example Support",
    "Süpport",
    'Jürgen "The Boss" Müller',
    "Smith, John (Sales)",
    "Alice\r\nBcc: victim@evil.test",
    "=?utf-8?q?not_really_encoded?=",
    "李小龙 客服",
    "Émile Zola " * 30,  # long: several encoded words, folded
    'back\\slash "quote"',
]
SUBJECTS = [
    "",
    "[Case #00000042] Printer on fire",
    "Re: Grüße [Case #00000042] " + "word " * 30,
    "Grüße\r\nBcc: victim@evil.test",
    "=?utf-8?q?looks_encoded?= but is not",
    "naïve café résumé déjà vu",
    "x" * 950,
    "日本語の件名 と English mixed 文字",
]
BODIES = [
    ("", ""),
    ("Hello,\nwe got your message.\n", ""),
    ("Grüße aus Köln\r\n.\nfrom=here\n", "<p>Grüße</p>"),
    ("a" * 1200 + "\n", "<p>" + "b" * 1100 + "</p>"),
    ("line\x0cwith form feed\n", "<p>ok</p>\n"),
    ("trailing spaces   \n\tand tabs\t\n", ""),
]
REPLIES = [
    Reply("Alice", "alice@customer.test", "<m1@customer.test>", []),
    Reply(
        "Ünïcode Customer",
        "bob@customer.test",
        "<m2@customer.test>",
        [f"<r{i}-{'x' * 40}@customer.test>" for i in range(30)] + ["not an id", "<bad id>"],
    ),
    Reply("", "carol@customer.test", "no angle brackets", ["<r1@x.test>"]),
]


def cases() -> list[tuple[str, str, tuple[str, str], Reply, str]]:
    """A spread of the combinations (every input appears with several others)."""
    combos = itertools.product(NAMES, SUBJECTS, BODIES, REPLIES, ["", "ref:00000042:abcdef"])
    return [c for i, c in enumerate(combos) if i % 11 == 0]


def decoded(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def texts(msg: EmailMessage) -> list[tuple[str, str]]:
    parts = list(msg.iter_parts()) if msg.is_multipart() else [msg]
    out = []
    for part in parts:
        assert isinstance(part, EmailMessage)
        content = part.get_content()
        assert isinstance(content, str)
        out.append((part.get_content_type(), content))
    return out


@pytest.mark.parametrize(("name", "subject", "bodies", "reply", "token"), cases())
def test_compose_reads_back_as_the_stdlib_composition(
    name: str, subject: str, bodies: tuple[str, str], reply: Reply, token: str
) -> None:
    rendered = Rendered(subject=subject, text=bodies[0], html=bodies[1])
    kwargs = {
        "from_name": name,
        "from_address": "support@example.com",
        "reply": reply,
        "message_id": "<case.42.abc@example.com>",
        "body_token": token,
    }
    ours = compose(rendered, now=NOW, **kwargs)  # type: ignore[arg-type]
    theirs = reference(rendered, **kwargs)  # type: ignore[arg-type]

    # Safe to send as it is.
    assert ours.isascii()
    assert b"\n" not in ours.replace(b"\r\n", b"")
    assert b"\r" not in ours.replace(b"\r\n", b"")
    lines = ours.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head = ours.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    for line in head:
        # Only one plain word too long to split (a 900-character subject word)
        # may pass 78 columns; encoded words never do.
        words = line.split() if line[:1] == b" " else line.split()[1:]
        assert len(line) <= 78 or (len(words) == 1 and not words[0].startswith(b"=?")), line

    mine, ref = decoded(ours), decoded(theirs)
    names = sorted(k.lower() for k in mine)
    assert names == sorted(k.lower() for k in ref)  # the same headers, nothing added
    assert not mine.defects and not ref.defects
    # Text that merely looks like an encoded word stays that text (the stdlib
    # lets it through unencoded, so readers decode it into something else).
    assert str(mine["Subject"]) == one_line(subject, 900)
    if "=?" not in subject:
        assert str(ref["Subject"]) == one_line(subject, 900)
    for key in (
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Auto-Submitted",
        "X-Auto-Response-Suppress",
        "Precedence",
        LOOP_HEADER,
    ):
        assert str(mine.get(key, "")) == str(ref.get(key, "")), key
    for key, who, address in (
        ("From", name, "support@example.com"),
        ("To", reply.to_name, reply.to_address),
        ("Reply-To", name, "support@example.com"),
    ):
        # The name as given, on one line (the stdlib's own folding of a long
        # non-ASCII name does not always read back whole, so it is no oracle here).
        got = [(a.display_name, a.addr_spec) for a in mine[key].addresses]
        assert got == [(one_line(who), address)], key
        assert [a.addr_spec for a in ref[key].addresses] == [address]
    assert mine.get_content_type() == ref.get_content_type()
    assert texts(mine) == texts(ref)


def test_long_text_without_spaces_is_split_into_encoded_words_that_decode_whole() -> None:
    name, subject = "李" * 300, "件" * 900
    raw = compose(
        Rendered(subject=subject, text="t", html=""),
        from_name=name,
        from_address="support@example.com",
        reply=Reply(name, "a@customer.test", "<m@x>", []),
        message_id="<id@example.com>",
        now=NOW,
    )
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    msg = message_from_bytes(raw, policy=compat32)
    # RFC 2047 section 6.2: the space between two encoded words is not text.
    assert str(make_header(decode_header(msg["Subject"]))) == subject
    assert str(make_header(decode_header(msg["To"]))) == f"{name} <a@customer.test>"
    assert str(decoded(raw)["Subject"]) == subject


def test_an_unusable_recipient_or_sender_is_refused() -> None:
    rendered = Rendered(subject="s", text="t", html="")
    good = Reply("A", "a@customer.test", "<m@x>", [])
    with pytest.raises(ValueError, match="recipient"):
        compose(
            rendered,
            from_name="S",
            from_address="support@example.com",
            reply=Reply("A", "a@customer.test>\r\nBcc: x@y", "<m@x>", []),
            message_id="<id@example.com>",
            now=NOW,
        )
    with pytest.raises(ValueError, match="sender"):
        compose(
            rendered,
            from_name="S",
            from_address="support@example.com\r\nBcc: x@y",
            reply=good,
            message_id="<id@example.com>",
            now=NOW,
        )
    assert usable_address("a@customer.test") and not usable_address("a b@customer.test")
