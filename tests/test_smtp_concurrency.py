"""Many SMTP senders at once: every one is stored or told to retry, none starves.

SQLite has one writer at a time; its own busy handler makes waiting writers
sleep and poll, so under load some lose the race until the busy timeout and
get 451 for no reason. The pipeline queues this process's writers instead
(``Database.serial_writes``); these tests hold it to that on real sockets.
"""

from __future__ import annotations

import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from smtp_helpers import smtp_listener
from sqlalchemy import func, select

from emaild.app import App
from emaild.errors import TransientError
from emaild.pipeline import Envelope
from emaild.store.database import Database
from emaild.store.models import ChannelStatus, Message

SENDERS = 24
EACH = 3


def message(sender: int, n: int) -> bytes:
    return (
        f"From: Customer {sender} <c{sender}@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: Order {sender}-{n}\r\nMessage-ID: <load-{sender}-{n}@customer.test>\r\n"
        f"\r\n{'Where is my order? ' * 40}\r\n"
    ).encode()


def test_concurrent_senders_are_all_stored(make_config: Any) -> None:
    # A short busy timeout: a writer starved by SQLite's polling would fail fast.
    app = App.open(make_config("[storage]\nbusy_timeout_seconds = 2.0\n"))
    replies: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def sender(i: int, host: str, port: int) -> None:
        for n in range(EACH):
            with smtplib.SMTP(host, port, timeout=60) as client:
                client.ehlo()
                client.mail(f"c{i}@customer.test")
                client.rcpt("support@example.com")
                reply = client.data(message(i, n))
            with lock:
                replies.append(reply)

    try:
        with smtp_listener(app) as (host, port):
            threads = [
                threading.Thread(target=sender, args=(i, host, port)) for i in range(SENDERS)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        assert len(replies) == SENDERS * EACH
        assert [code for code, _ in replies if code != 250] == []
        with app.db.session() as s:
            assert s.scalar(select(func.count()).select_from(Message)) == SENDERS * EACH
    finally:
        app.close()


def test_busy_workers_never_starve_each_other(make_config: Any) -> None:
    """The daemon's worker pool writing flat out: no 451 from lock starvation.

    With SQLite's own busy handler alone, a few of these writers time out
    (seen: 7 to 10 of 240 with a 0.5 s busy timeout); queued, none do.
    """
    app = App.open(make_config("[storage]\nbusy_timeout_seconds = 0.5\n"))

    def ingest(i: int) -> str:
        try:
            app.pipeline.ingest(message(i, 0), Envelope(channel="smtp"))
        except TransientError as exc:
            return str(exc)
        return ""

    try:
        with ThreadPoolExecutor(app.config.limits.workers) as pool:
            errors = [e for e in pool.map(ingest, range(160)) if e]
        assert errors == []
        with app.db.session() as s:
            assert s.scalar(select(func.count()).select_from(Message)) == 160
    finally:
        app.close()


def test_a_read_inside_a_write_turn_does_not_wait_for_itself(database_url: str) -> None:
    """An address-book refresh inside the pipeline's transaction reads at once."""
    db = Database(database_url, busy_timeout=2.0)
    db.migrate()
    try:
        with db.serial_writes(), db.sessions() as writer, writer.begin():
            writer.add(ChannelStatus(name="probe", kind="test"))
            writer.flush()
            started = time.monotonic()
            with db.session() as reader:
                names = reader.scalars(select(ChannelStatus.name)).all()
            assert time.monotonic() - started < 1.0
            assert names == []  # the other transaction's write is not visible yet
        # The turn is free again: an ordinary writer gets in at once.
        started = time.monotonic()
        db.run(lambda s: s.add(ChannelStatus(name="after", kind="test")))
        assert time.monotonic() - started < 1.0
        with db.session() as s:
            assert sorted(s.scalars(select(ChannelStatus.name))) == ["after", "probe"]
            assert s.get(ChannelStatus, "after") is not None
    finally:
        db.dispose()
