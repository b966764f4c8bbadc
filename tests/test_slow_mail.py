"""Issue 18 §2: one slow message neither stalls the pool nor gets 451 forever.

- mail already stored (same bytes, or same Message-ID) is answered before
  parsing: with limits that would now quarantine it, a retry is still a
  duplicate;
- parse cost is bounded: over a limit (parts, nesting, header fields and
  bytes, recipients) the message is kept raw in quarantine, unparsed, and
  the sender gets 250;
- one peer address holds at most its share of the workers: while it does,
  a client from 127.0.0.2 is still stored within a second.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from typing import Any

import pytest
from mailbuilder import build_mail, count
from smtp_helpers import running_listener

from emaild.app import App
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Message, QuarantineEntry

BEFORE_PARSING = "already stored (found before parsing)"


def multipart(parts: int, *, message_id: str = "<parts@customer.test>") -> bytes:
    head = (
        f"From: a@customer.test\r\nTo: support@example.com\r\nSubject: parts\r\n"
        f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
    ).encode()
    body = b"".join(
        b"--zz\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=a%d.bin\r\n\r\nABC\r\n" % i
        for i in range(parts)
    )
    return head + body + b"--zz--\r\n"


def nested(depth: int) -> bytes:
    head = b"From: a@customer.test\r\nTo: support@example.com\r\nSubject: deep\r\n"
    head += b"MIME-Version: 1.0\r\n"
    raw = head + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(depth):
        raw += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
    raw += b"--b%d\r\nContent-Type: text/plain\r\n\r\nbottom\r\n" % depth
    for i in range(depth, -1, -1):
        raw += b"--b%d--\r\n" % i
    return raw


@pytest.mark.parametrize("same", ["bytes", "message-id", "bytes without message-id"])
def test_a_retry_of_stored_mail_is_answered_before_parsing(make_app: Any, same: str) -> None:
    mid = "" if same == "bytes without message-id" else "<parts@customer.test>"
    raw = multipart(5, message_id=mid)
    if not mid:
        raw = raw.replace(b"Message-ID: \r\n", b"")
    first = make_app()
    stored = first.pipeline.ingest(raw, Envelope(channel="test"))
    assert stored.outcome is Outcome.NEW_CASE
    first.close()
    # Limits under which parsing would now quarantine it: answered without parsing.
    strict = make_app("[limits]\nmax_parts = 2\n")
    again = raw if same != "message-id" else raw.replace(b"Subject: parts", b"Subject: resent")
    result = strict.pipeline.ingest(again, Envelope(channel="test"))
    assert (result.outcome, result.case_number) == (Outcome.DUPLICATE, stored.case_number)
    assert result.detail == BEFORE_PARSING
    assert count(strict, QuarantineEntry) == 0 and count(strict, Message) == 1


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (multipart(1500), "max_parts"),
        (nested(30), "max_depth"),
        (build_mail(headers="X-Filler: x\r\n" * 2500), "max_header_fields"),
        (build_mail(headers="X-Big: " + "y" * 300_000 + "\r\n"), "max_header_bytes"),
        (
            build_mail(to=", ".join(f"u{i}@customer.test" for i in range(1200))),
            "max_recipients",
        ),
    ],
    ids=["parts", "depth", "header-fields", "header-bytes", "recipients"],
)
def test_over_a_parse_limit_is_kept_raw_in_quarantine(app: App, raw: bytes, key: str) -> None:
    started = time.monotonic()
    result = app.pipeline.ingest(raw, Envelope(channel="test"))
    assert time.monotonic() - started < 30  # bounded; speed itself is bench/'s business
    assert result.outcome is Outcome.QUARANTINED
    assert key in result.detail
    with app.db.session() as s:
        entry = s.get(QuarantineEntry, result.quarantine_id)
        assert entry is not None and entry.reason == "over_limit" and entry.raw_size == len(raw)
    assert app.blobs.read(result_sha(app, result.quarantine_id)) == raw


def result_sha(app: App, entry_id: int | None) -> str:
    with app.db.session() as s:
        entry = s.get(QuarantineEntry, entry_id)
        assert entry is not None
        return entry.raw_sha256


def test_many_parts_under_the_limit_still_parse(app: App) -> None:
    result = app.pipeline.ingest(multipart(900), Envelope(channel="test"))
    assert result.outcome is Outcome.NEW_CASE


def _send_from(source: str, address: tuple[str, int], raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(*address, source_address=(source, 0), timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@customer.test")
        client.rcpt("support@example.com")
        return client.data(raw)


def test_a_peer_holding_its_share_does_not_stall_other_peers(make_app: Any) -> None:
    app = make_app("[limits]\nworkers = 2\npeer_worker_share = 0.5\n")
    with running_listener(app) as running:
        channel = running.channel
        assert channel is not None
        # 127.0.0.1 already holds its whole share (one worker): as if a slow
        # message of its own were being parsed.
        asyncio.run_coroutine_threadsafe(
            channel.peers.acquire("127.0.0.1", 1), running.loop
        ).result(5)
        waiting: dict[str, Any] = {}

        def first_peer() -> None:
            waiting["reply"] = _send_from(
                "127.0.0.1", running.address, build_mail(message_id="<p1@customer.test>")
            )

        blocked = threading.Thread(target=first_peer)
        blocked.start()
        time.sleep(0.3)
        assert "reply" not in waiting  # it waits for its own share, holding no worker
        started = time.monotonic()
        code, text = _send_from(
            "127.0.0.2", running.address, build_mail(message_id="<p2@customer.test>")
        )
        assert code == 250 and b"new case" in text
        assert time.monotonic() - started < 1.0
        running.loop.call_soon_threadsafe(channel.peers.release, "127.0.0.1")
        blocked.join(30)
        assert waiting["reply"][0] == 250
        assert channel.peers.busy == {}


def test_retry_over_smtp_says_already_stored(app: App) -> None:
    raw = build_mail(message_id="<retry@customer.test>")
    with running_listener(app) as running:
        first = _send_from("127.0.0.1", running.address, raw)
        second = _send_from("127.0.0.1", running.address, raw)
    assert first[0] == 250 and second == (250, b"2.0.0 Ok: already stored")
