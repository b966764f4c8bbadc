"""Build a well-formed auto-response as the bytes that go on the wire.

Every header value that can come from a customer (names, subjects,
Message-IDs) passes through ``one_line`` or a strict syntax check before it
reaches a header, so a CR or LF in a customer's name or subject can never
start a header of its own. Non-ASCII text is RFC 2047 encoded and long lines
are folded at spaces (78 characters where the words allow).

The message is written directly rather than through ``email.message``: its
shape is fixed (a text part, optionally an HTML alternative), and the stdlib's
header registry made composing cost more than parsing and storing the
customer's message. ``tests/test_autoresponse_compose.py`` checks the output
against the stdlib's own composition of the same message.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.quoprimime import body_encode
from email.utils import format_datetime
from html import escape

from emaild.autoresponse.templates import Rendered
from emaild.classify import LOOP_HEADER
from emaild.text import one_line

# A msg-id we are willing to repeat: <printable-ASCII-without-space-or-angles>.
_MSG_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]{1,900}>$")
# An address we are willing to send to: no spaces, quotes, angles or controls.
_ADDR_SPEC = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}$")
# The same with non-ASCII (RFC 6531/6532): any non-ASCII character besides the
# ASCII ones above, never a space, control, quote, angle or separator.
_UTF8_ADDR_SPEC = re.compile(
    r"^(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]|[^\x00-\x7f\s])+"
    r"@(?:[A-Za-z0-9.-]|[^\x00-\x7f\s])+$"
)
# Our own (configured) sender address: at least nothing that could end the header.
_OWN_ADDRESS = re.compile(r"^[\x21-\x7e]{1,320}$")
# RFC 5322 atext plus the space between words: a display name made only of
# these needs no quoting.
_PLAIN_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*$")
MAX_REFERENCES = 20
LINE = 78
CRLF = "\r\n"
# UTF-8 bytes per encoded word: "=?utf-8?b?" + base64(42 bytes: 56) + "?=" is 68
# characters, so even "Reply-To: " and one word fit in 78 columns (RFC 2047: <= 75).
_WORD_BYTES = 42
# How much of a display name and of a subject a header keeps.
_NAME_CHARS = 300
_SUBJECT_CHARS = 900


def smtp_address(address: str) -> str:
    """``address`` as it goes into RCPT TO and the To header: a non-ASCII domain in
    its ASCII (IDNA) form, so only a non-ASCII local part still needs SMTPUTF8."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:  # not a valid IDN: left as is, then refused as unusable
        return address


def usable_address(address: str) -> bool:
    """A ``local@domain`` we can put in RCPT TO and a header unchanged (after
    ``smtp_address``); a non-ASCII local part needs a relay offering SMTPUTF8."""
    address = smtp_address(address)
    local, _, domain = address.rpartition("@")
    if not domain.isascii() or len(local.encode()) > 64 or len(domain) > 253:
        return False
    pattern = _ADDR_SPEC if address.isascii() else _UTF8_ADDR_SPEC
    return bool(pattern.match(address)) and not domain.startswith(".") and ".." not in domain


def valid_msg_id(value: str) -> bool:
    return bool(_MSG_ID.match(value))


@dataclass(frozen=True)
class Reply:
    """What the auto-response answers: the customer's message, as stored."""

    to_name: str
    to_address: str
    message_id: str
    references: Sequence[str]


def compose(
    rendered: Rendered,
    *,
    from_name: str,
    from_address: str,
    reply: Reply,
    message_id: str,
    now: datetime,
    body_token: str = "",
) -> bytes:
    """The auto-response as raw bytes (CRLF line ends), ready for the outbox.

    The subject is used as rendered (the caller adds the case's tag);
    ``body_token`` is appended to each body when body tokens are on.
    """
    if not usable_address(reply.to_address):
        raise ValueError(f"recipient address not usable: {reply.to_address!r}")
    # A non-ASCII local part stays UTF-8 in the header (RFC 6532); the relay
    # session then asks for SMTPUTF8 (emaild.outbox.relay).
    reply = replace(reply, to_address=smtp_address(reply.to_address))
    if not _OWN_ADDRESS.match(from_address) or "<" in from_address or ">" in from_address:
        raise ValueError(f"sender address not usable: {from_address!r}")
    if not valid_msg_id(message_id):
        raise ValueError(f"not a Message-ID: {message_id!r}")
    sender = _mailbox(one_line(from_name, _NAME_CHARS), from_address)
    head = [
        _header("From", sender),
        _header("To", _mailbox(one_line(reply.to_name, _NAME_CHARS), reply.to_address)),
        _header("Reply-To", sender),
        _header("Subject", _text_words(one_line(rendered.subject, _SUBJECT_CHARS))),
        _header("Date", [format_datetime(now)]),
        _header("Message-ID", [message_id]),
    ]
    if valid_msg_id(reply.message_id):
        head.append(_header("In-Reply-To", [reply.message_id]))
    references = [r for r in reply.references if valid_msg_id(r)][-MAX_REFERENCES:]
    if valid_msg_id(reply.message_id) and reply.message_id not in references:
        references.append(reply.message_id)
    if references:
        head.append(_header("References", references[-MAX_REFERENCES:]))
    # RFC 3834: this is an automatic reply; Microsoft's header asks Exchange and
    # Outlook not to answer it with their own auto-replies; Precedence is the
    # older convention vacation programs still honour; the loop header marks
    # mail we sent if it ever comes back to us.
    head += [
        "Auto-Submitted: auto-replied",
        "X-Auto-Response-Suppress: All",
        "Precedence: bulk",
        f"{LOOP_HEADER}: {from_address}",
        "MIME-Version: 1.0",
    ]
    text = rendered.text
    html = rendered.html
    if body_token:
        text = f"{text.rstrip()}\n\n{body_token}\n"
        if html:
            token = escape(body_token)
            html = f'{html.rstrip()}\n<p style="color:#999999;font-size:smaller">{token}</p>\n'
    parts = [_text_part("plain", text)]
    if html:
        parts.append(_text_part("html", html))
    if len(parts) == 1:
        return _join(head, *parts[0])
    boundary = _boundary(parts)
    head.append(f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"')
    body = "".join(
        f"--{boundary}{CRLF}{CRLF.join(part_head)}{CRLF}{CRLF}{part_body}{CRLF}"
        for part_head, part_body in parts
    )
    return _join(head, [], f"{body}--{boundary}--{CRLF}")


def _join(head: list[str], part_head: list[str], body: str) -> bytes:
    # Every line was checked or built as ASCII: encoding cannot fail or smuggle.
    # ASCII unless a recipient address is UTF-8 (RFC 6532): then the header is too.
    return f"{CRLF.join(head + part_head)}{CRLF}{CRLF}{body}".encode()


# --- headers ----------------------------------------------------------------------
def _header(name: str, words: list[str]) -> str:
    """``Name: word word ...``, folded before a word that would pass ``LINE`` columns.

    Every gap between words is one space that may become CRLF + space: a real
    space, or one between two encoded words, which decoders ignore.
    """
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > LINE and line != f"{name}:":
            lines.append(line)
            line = ""
        line = f"{line} {word}"
    lines.append(line)
    return CRLF.join(lines)


def _needs_encoding(word: str) -> bool:
    return not word.isascii() or "=?" in word


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 B encoded words of at most 75 characters each."""
    words: list[str] = []
    chunk = bytearray()
    for char in text:
        data = char.encode("utf-8", "replace")
        if len(chunk) + len(data) > _WORD_BYTES:
            words.append(_b_word(bytes(chunk)))
            chunk.clear()
        chunk += data
    if chunk:
        words.append(_b_word(bytes(chunk)))
    return words


def _b_word(data: bytes) -> str:
    return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="


def _text_words(value: str, needs_encoding: Callable[[str], bool] = _needs_encoding) -> list[str]:
    """``value`` as header words: words that need it RFC 2047 encoded, the rest as they are.

    A run of neighbouring words that need encoding is encoded as one piece,
    spaces included: the space between two encoded words is dropped when
    decoding. Plain words between them keep the spaces around them readable
    by every decoder (some insert a space between encoded words in a name).
    """
    out: list[str] = []
    run: list[str] = []
    for word in value.split(" "):
        if needs_encoding(word):
            run.append(word)
            continue
        if run:
            out += _encoded_words(" ".join(run))
            run = []
        if word:
            out.append(word)
    if run:
        out += _encoded_words(" ".join(run))
    return out


def _not_an_atom(word: str) -> bool:
    return _needs_encoding(word) or not _PLAIN_PHRASE.match(word)


def _mailbox(name: str, address: str) -> list[str]:
    """A display name and address as header words: ``Name <addr>``."""
    if not name:
        return [address]
    if _needs_encoding(name):  # encoded words, with atoms left plain between them
        phrase = _text_words(name, _not_an_atom)
    elif _PLAIN_PHRASE.match(name):
        phrase = name.split(" ")
    else:  # ASCII with specials ("," "." quotes...): one quoted string
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        phrase = [f'"{quoted}"']
    return [*phrase, f"<{address}>"]


# --- bodies -----------------------------------------------------------------------
def _text_part(subtype: str, body: str) -> tuple[list[str], str]:
    """Headers and encoded body of a ``text/<subtype>`` UTF-8 part (body ends in CRLF)."""
    lines = body.encode("utf-8", "surrogateescape").splitlines()
    # 7bit when plain ASCII in short lines; quoted-printable otherwise, since a
    # relay may lack 8BITMIME.
    plain = all(line.isascii() and len(line) <= 998 and b"\x00" not in line for line in lines)
    if plain:
        cte, encoded = "7bit", CRLF.join(line.decode("ascii") for line in lines) + CRLF
    else:
        normal = b"\n".join(lines).decode("latin-1") + "\n"
        cte, encoded = "quoted-printable", body_encode(normal, LINE).replace("\n", CRLF)
    head = [f'Content-Type: text/{subtype}; charset="utf-8"', f"Content-Transfer-Encoding: {cte}"]
    return head, encoded


def _boundary(parts: list[tuple[list[str], str]]) -> str:
    while True:
        boundary = f"=_emaild_{secrets.token_hex(12)}"
        if not any(boundary in body for _head, body in parts):
            return boundary
