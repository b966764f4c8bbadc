"""Issue 18 §5: bad input becomes neither limbo nor a traceback.

- NUL (and other control characters, bytes that are not UTF-8) in the
  arguments of HELO/EHLO/LHLO, MAIL and RCPT are refused at the command, on a
  real socket;
- every text column stores NUL and lone surrogates, on SQLite and PostgreSQL;
- decoding errors open a case with the defect recorded; encoded display
  names with ':' or '@' keep the real address;
- ``emaild ingest`` prints one line (no traceback), and input that is not a
  message exits 65 and is kept in quarantine.
"""

from __future__ import annotations

import json
import smtplib
import socket
from typing import Any

import pytest
from mailbuilder import build_mail, count
from smtp_helpers import smtp_listener

from emaild.app import App
from emaild.channels.smtp.guard import BAD_HELO, BAD_RECIPIENT, BAD_SENDER
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Case, Message, QuarantineEntry


def _talk(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return _reply(sock)


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while True:
        data += sock.recv(4096)
        lines = data.split(b"\r\n")
        # A complete reply ends with a line whose code is followed by a space.
        if len(lines) > 1 and any(len(x) > 3 and x[3:4] == b" " for x in lines[:-1]):
            return data


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        ([b"EHLO client\x00.test"], BAD_HELO),
        ([b"HELO client\x00.test"], BAD_HELO),
        ([b"EHLO client.test", b"MAIL FROM:<a\x00b@customer.test>"], BAD_SENDER),
        ([b"EHLO client.test", b"MAIL FROM:<caf\xe9@customer.test>"], BAD_SENDER),
        (
            [
                b"EHLO client.test",
                b"MAIL FROM:<a@customer.test>",
                b"RCPT TO:<support@example.com\x00>",
            ],
            BAD_RECIPIENT,
        ),
    ],
)
def test_control_characters_are_refused_at_the_command(
    app: App, commands: list[bytes], expected: str
) -> None:
    with smtp_listener(app) as (host, port), socket.create_connection((host, port), 5) as sock:
        sock.settimeout(5)
        assert _reply(sock).startswith(b"220")
        for line in commands[:-1]:
            assert _talk(sock, line)[:1] == b"2", line
        assert _talk(sock, commands[-1]).decode().strip() == expected
        # The session goes on: a clean transaction on the same connection is stored.
        if not commands[-1].startswith(b"RCPT"):
            assert _talk(sock, b"RSET")[:3] == b"250"
            if commands[-1][:4] in (b"EHLO", b"HELO"):
                assert _talk(sock, b"EHLO client.test")[:3] == b"250"
            assert _talk(sock, b"MAIL FROM:<a@customer.test>")[:3] == b"250"
        assert _talk(sock, b"RCPT TO:<support@example.com>")[:3] == b"250"
        assert _talk(sock, b"DATA")[:3] == b"354"
        raw = build_mail(message_id="<after-bad-command@customer.test>")
        assert _talk(sock, raw + b".")[:3] == b"250"
    assert count(app, Case) == 1


def test_lmtp_refuses_a_nul_in_lhlo(app: App) -> None:
    listener = smtp_listener(app, lmtp=True)
    with listener as (host, port), socket.create_connection((host, port), 5) as sock:
        sock.settimeout(5)
        assert _reply(sock).startswith(b"220")
        assert _talk(sock, b"LHLO x\x00y").decode().strip() == BAD_HELO
        assert _talk(sock, b"LHLO client.test")[:3] == b"250"


def test_smtplib_client_still_works(app: App) -> None:
    with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
        client.sendmail("a@customer.test", ["support@example.com"], build_mail())
    assert count(app, Case) == 1


def test_every_text_column_stores_nul_and_surrogates(app: App) -> None:
    raw = build_mail(
        sender="Al\x00ice <alice@customer.test>",
        subject="Printer\x00 on fire",
        headers="X-Odd: a\x00b\r\n",
        body="It is\x00 on fire.",
    )
    envelope = Envelope(
        channel="test",
        mail_from="a\x00b@customer.test",
        rcpt_to=("support@example.com", "caf\udce9@example.com"),
    )
    result = app.pipeline.ingest(raw, envelope)
    assert result.outcome is Outcome.NEW_CASE, result.detail
    with app.db.session() as s:
        m = s.get(Message, result.message_row_id)
        assert m is not None
        assert m.envelope_from == "a\ufffdb@customer.test"
        assert m.envelope_to == ["support@example.com", "caf\ufffd@example.com"]
        stored = json.dumps([m.subject, m.text, m.from_name, m.headers])
        assert "\\u0000" not in stored and "\x00" not in stored
    # The raw bytes are kept exactly: only the columns are made storable.
    with app.db.session() as s:
        m = s.get(Message, result.message_row_id)
        assert m is not None and app.blobs.read(m.raw_sha256) == raw


def test_quarantine_entry_stores_nul(app: App) -> None:
    raw = b"\x00\x00 not mail \x00\r\n"
    result = app.pipeline.ingest(raw, Envelope(channel="test", mail_from="x\x00@y.test"))
    assert result.outcome is Outcome.QUARANTINED and result.not_a_message
    with app.db.session() as s:
        entry = s.get(QuarantineEntry, result.quarantine_id)
        assert entry is not None and entry.reason == "unusable"
        assert entry.envelope_from == "x\ufffd@y.test"
        assert "Traceback" in entry.error  # the traceback lives here, not on stderr


@pytest.mark.parametrize(
    ("header", "name", "addr"),
    [
        (
            "=?utf-8?q?Info:_sales@firma.example?= <real@firma.example>",
            "Info: sales@firma.example",
            "real@firma.example",
        ),
        ("=?utf-8?q?M=C3=BCller=2C_Hans?= <h@x.example>", "Müller, Hans", "h@x.example"),
    ],
)
def test_encoded_display_names_keep_the_real_address(
    app: App, header: str, name: str, addr: str
) -> None:
    result = app.pipeline.ingest(build_mail(sender=header), Envelope(channel="test"))
    assert result.outcome is Outcome.NEW_CASE
    with app.db.session() as s:
        case = s.get(Case, result.case_number)
        assert case is not None and (case.customer, case.customer_name) == (addr, name)


DECODE_ERRORS = {
    "non-ascii in base64": (
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n",
        "aGVsbG8gd29y\u00e4bGQ=",
        "hello",
    ),
    "unknown charset": (
        "Content-Type: text/plain; charset=x-no-such-42\r\n",
        "plain words",
        "plain words",
    ),
    "incorrect padding": (
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n",
        "aGVsbG8gd29ybGQ",
        "hello",
    ),
    "embedded NUL": ("Content-Type: text/plain; charset=utf-8\r\n", "be\x00fore after", "after"),
    "bad encoded word": ("", "body text", "body text"),
}


@pytest.mark.parametrize("kind", sorted(DECODE_ERRORS))
def test_decoding_errors_open_a_case(app: App, kind: str) -> None:
    headers, body, visible = DECODE_ERRORS[kind]
    subject = "=?utf-8?b?w6k=?=x=?utf-8?b?###?=" if kind == "bad encoded word" else "Decode"
    raw = build_mail(subject=subject, headers="MIME-Version: 1.0\r\n" + headers, body=body)
    result = app.pipeline.ingest(raw, Envelope(channel="test"))
    assert result.outcome is Outcome.NEW_CASE, result.detail
    with app.db.session() as s:
        m = s.get(Message, result.message_row_id)
        assert m is not None and visible in m.text


def test_ingest_prints_one_line_for_a_quarantine(run_cli: Any) -> None:
    # A stage failure (a header block that no parser salvages) without -v.
    proc = run_cli("ingest", input=b"hello\n")
    assert proc.returncode == 65
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("emaild: unusable input:") and "Traceback" not in lines[0]
    assert "kept as quarantine entry 1" in lines[0]
    (entry,) = json.loads(run_cli("quarantine", "list", "--json").stdout)
    assert entry["reason"] == "unusable"
    as_json = run_cli("ingest", "--json", input=b"hello again\n")
    assert as_json.returncode == 65
    assert json.loads(as_json.stdout)["outcome"] == "quarantined"
    assert b"Traceback" not in as_json.stderr and len(as_json.stderr.splitlines()) == 1
