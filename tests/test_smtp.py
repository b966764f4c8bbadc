"""The SMTP/LMTP listener on real sockets, on SQLite and PostgreSQL.

Every test talks to the real ``SmtpChannel`` with ``smtplib`` (or a raw
socket where smtplib hides the protocol) and checks the database afterwards.
"""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from smtp_helpers import running_listener, smtp_listener
from sqlalchemy import func, select

from emaild.app import App
from emaild.channels.smtp import replies
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Case, ChannelStatus, Message, QuarantineEntry

SENDER = "alice@customer.test"


def message(
    n: int | str,
    *,
    to: str = "support@example.com",
    body: str = "It is on fire.",
    sender: str = SENDER,
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\n"
        f"To: {to}\r\n"
        f"Subject: Printer {n}\r\n"
        f"Message-ID: <smtp-{n}@customer.test>\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()


def count(app: App, model: type) -> int:
    with app.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def reply_line(code: int, text: bytes) -> str:
    """smtplib's (code, text) back into the reply line the server sent."""
    return f"{code} {text.decode()}"


def test_message_to_routing_address_is_a_case_before_250(app: App) -> None:
    with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
        client.ehlo("client.test")
        client.mail(SENDER)
        code, text = client.rcpt("support@example.com")
        assert reply_line(code, text) == replies.RCPT_OK
        code, text = client.data(message(1))
        # The reply names the case; it must already be committed when it arrives.
        with app.db.session() as s:
            case = s.scalars(select(Case)).one()
            stored = s.scalars(select(Message)).one()
        assert reply_line(code, text) == f"250 2.0.0 Ok: new case {case.id}"
        assert stored.channel == "smtp"
        assert stored.envelope_from == SENDER
        assert stored.envelope_to == ["support@example.com"]
        assert app.blobs.read(stored.raw_sha256) == message(1)
        # The same message again (a retry after a lost 250) is not stored twice.
        assert client.sendmail(SENDER, ["support@example.com"], message(1)) == {}
    assert count(app, Case) == 1
    assert count(app, Message) == 1


def test_unknown_recipient_gets_550_and_nothing_is_stored(app: App) -> None:
    with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail(SENDER, ["nobody@example.com"], message(2))
        code, text = refused.value.recipients["nobody@example.com"]
        assert reply_line(code, text) == replies.UNKNOWN_RECIPIENT
        # Relaying elsewhere is refused the same way: never an open relay.
        client.rset()
        client.mail(SENDER)
        assert reply_line(*client.rcpt("victim@elsewhere.test")) == replies.UNKNOWN_RECIPIENT
    assert count(app, Message) == 0
    assert count(app, QuarantineEntry) == 0
    assert not any(p.is_file() for p in app.blobs.root.rglob("*"))


def test_alias_is_accepted_and_null_sender_is_stored(make_config: Any) -> None:
    config = make_config(
        '[[address]]\naddress = "support@example.com"\naliases = ["help@example.com"]\n'
    )
    app = App.open(config)
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            client.mail("<>")
            assert reply_line(*client.rcpt("HELP@Example.com")) == replies.RCPT_OK
            code, _ = client.data(message(3, to="help@example.com"))
            assert code == 250
        with app.db.session() as s:
            stored = s.scalars(select(Message)).one()
            assert stored.envelope_from == ""
            assert stored.routing_address == "support@example.com"
    finally:
        app.close()


def test_lmtp_gives_one_status_per_recipient(make_config: Any) -> None:
    config = make_config(
        '[[address]]\naddress = "support@example.com"\n[[address]]\naddress = "sales@example.com"\n'
    )
    app = App.open(config)
    try:
        with smtp_listener(app, lmtp=True) as (host, port), smtplib.LMTP(host, port) as client:
            code, _ = client.ehlo("mta.test")  # smtplib.LMTP sends LHLO
            assert code == 250
            client.mail(SENDER)
            assert reply_line(*client.rcpt("support@example.com")) == replies.RCPT_OK
            assert reply_line(*client.rcpt("nobody@example.com")) == replies.UNKNOWN_RECIPIENT
            assert reply_line(*client.rcpt("sales@example.com")) == replies.RCPT_OK
            # RFC 2033: one reply per accepted recipient, in RCPT order.
            first = reply_line(*client.data(message(4)))
            second = reply_line(*client.getreply())
            with app.db.session() as s:
                case = s.scalars(select(Case)).one()
            assert first == second == f"250 2.0.0 Ok: new case {case.id}"
            # The connection is still in sync: a new transaction works.
            assert client.noop()[0] == 250
        # One mail to two routing addresses is one case (contract 2).
        assert count(app, Message) == 1
        with app.db.session() as s:
            stored = s.scalars(select(Message)).one()
            assert stored.channel == "lmtp"
            assert stored.envelope_to == ["support@example.com", "sales@example.com"]
    finally:
        app.close()


def test_lmtp_one_known_one_unknown_recipient(app: App) -> None:
    with smtp_listener(app, lmtp=True) as (host, port), smtplib.LMTP(host, port) as client:
        client.ehlo()
        client.mail(SENDER)
        statuses = [
            reply_line(*client.rcpt("support@example.com")),
            reply_line(*client.rcpt("nobody@example.com")),
        ]
        statuses.append(reply_line(*client.data(message(5))))
        assert statuses[:2] == [replies.RCPT_OK, replies.UNKNOWN_RECIPIENT]
        assert statuses[2].startswith("250 2.0.0 Ok: new case ")
        # Only one DATA reply is owed: the next reply belongs to NOOP.
        assert client.noop() == (250, b"OK")
    assert count(app, Message) == 1


@pytest.mark.parametrize(
    ("action", "expected"),
    [("tempfail", replies.DISABLED_TEMPFAIL), ("reject", replies.DISABLED_REJECT)],
)
def test_disabled_address_gets_the_configured_code(
    make_config: Any, action: str, expected: str
) -> None:
    config = make_config(
        f'[[address]]\naddress = "support@example.com"\nenabled = false\n'
        f'disabled_action = "{action}"\n'
    )
    app = App.open(config)
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            client.mail(SENDER)
            assert reply_line(*client.rcpt("support@example.com")) == expected
        assert count(app, Message) == 0
    finally:
        app.close()


def test_accept_from_rejects_other_senders_at_rcpt(make_config: Any) -> None:
    config = make_config(
        '[[address]]\naddress = "support@example.com"\naccept_from = ["partner.test"]\n'
    )
    app = App.open(config)
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            client.mail("mallory@evil.test")
            assert reply_line(*client.rcpt("support@example.com")) == replies.SENDER_NOT_ALLOWED
            client.rset()
            partner = "bob@sub.partner.test"
            client.sendmail(partner, ["support@example.com"], message(6, sender=partner))
        with app.db.session() as s:
            assert s.scalars(select(Message.envelope_from)).all() == ["bob@sub.partner.test"]
    finally:
        app.close()


def test_oversize_message_gets_552(make_config: Any) -> None:
    app = App.open(make_config("[limits]\nmax_message_bytes = 4096\n"))
    big = message(7, body=("y" * 76 + "\r\n") * 80)
    assert len(big) > 4096
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            assert b"SIZE 4096" in client.ehlo_resp.split(b"\n")[1]  # type: ignore[union-attr]
            # Declared size over the limit: refused before any data is sent.
            assert reply_line(*client.mail(SENDER, ["SIZE=5000"])) == replies.MESSAGE_TOO_BIG
            # Undeclared: the body is read (and discarded as it comes), then refused.
            client.mail(SENDER)
            client.rcpt("support@example.com")
            assert reply_line(*client.data(big)) == replies.MESSAGE_TOO_BIG
            # The session goes on: a message within the limit is stored.
            assert client.sendmail(SENDER, ["support@example.com"], message(8)) == {}
        assert count(app, Message) == 1
    finally:
        app.close()


def test_too_many_recipients_gets_452(make_config: Any) -> None:
    app = App.open(make_config("[smtp]\nmax_recipients = 1\n"))
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            client.mail(SENDER)
            assert reply_line(*client.rcpt("support@example.com")) == replies.RCPT_OK
            assert reply_line(*client.rcpt("support@example.com")) == replies.TOO_MANY_RECIPIENTS
    finally:
        app.close()


def test_line_longer_than_the_limit_is_refused(make_config: Any) -> None:
    app = App.open(make_config("[smtp]\nmax_line_length = 1000\n"))
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            client.mail(SENDER)
            client.rcpt("support@example.com")
            code, text = client.data(message(9, body="z" * 1200))
            assert reply_line(code, text) == "500 5.5.2 Line too long"
        assert count(app, Message) == 0
    finally:
        app.close()


def test_connections_over_the_limit_get_421(make_config: Any) -> None:
    app = App.open(make_config("[smtp]\nmax_connections = 1\n"))
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as first:
            assert first.noop()[0] == 250
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP(host, port)
            assert reply_line(refused.value.smtp_code, refused.value.smtp_error) == (
                replies.TOO_MANY_CONNECTIONS
            )
            # The first session is unaffected.
            assert first.sendmail(SENDER, ["support@example.com"], message(10)) == {}
    finally:
        app.close()


def test_quarantined_message_is_accepted(app: App) -> None:
    class Boom:
        name = "boom"
        description = "always fails"
        needs_session = True

        def __call__(self, ctx: object) -> None:
            raise RuntimeError("kaboom")

    app.pipeline.stages = (*app.pipeline.stages[:3], Boom())
    with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("support@example.com")
        code, text = client.data(message(11))
    with app.db.session() as s:
        entry = s.scalars(select(QuarantineEntry)).one()
    assert reply_line(code, text) == f"250 2.0.0 Ok: stored in quarantine as entry {entry.id}"
    assert app.blobs.read(entry.raw_sha256) == message(11)


class Gate:
    """A pipeline stage that blocks until opened: a slow database, on demand."""

    name = "gate"
    description = "waits for the test"
    needs_session = False

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.open = threading.Event()

    def __call__(self, ctx: object) -> None:
        self.entered.release()
        self.open.wait(30)


@contextmanager
def gated(app: App) -> Iterator[Gate]:
    gate = Gate()
    app.pipeline.stages = (gate, *app.pipeline.stages)
    try:
        yield gate
    finally:
        gate.open.set()


def test_back_pressure_answers_451_instead_of_queueing(make_config: Any) -> None:
    app = App.open(make_config("[smtp]\nmax_pending = 1\n"))
    try:
        with gated(app) as gate, running_listener(app) as running:
            host, port = running.address
            results: list[Any] = []
            first = smtplib.SMTP(host, port)
            first.ehlo()
            thread = threading.Thread(
                target=lambda: results.append(
                    first.sendmail(SENDER, ["support@example.com"], message(12))
                )
            )
            thread.start()
            assert gate.entered.acquire(timeout=10)
            # The one pipeline slot is taken: the next sender is told to retry
            # at RCPT, before it sends the body, and the loop still answers.
            with smtplib.SMTP(host, port) as second:
                second.ehlo()
                second.mail(SENDER)
                assert reply_line(*second.rcpt("support@example.com")) == replies.BUSY
            gate.open.set()
            thread.join(10)
            first.quit()
            assert results == [{}]
            assert running.channel is not None and running.channel.pending == 0
        assert count(app, Message) == 1
    finally:
        app.close()


def test_pipeline_timeout_answers_451_and_the_retry_is_stored_once(make_config: Any) -> None:
    app = App.open(make_config("[limits]\npipeline_timeout_seconds = 0.5\n"))
    try:
        with gated(app) as gate, smtp_listener(app) as (host, port):
            with smtplib.SMTP(host, port) as client:
                client.ehlo()
                client.mail(SENDER)
                client.rcpt("support@example.com")
                assert reply_line(*client.data(message(13))) == replies.TEMPFAIL_TIMEOUT
            # The slow worker finishes after the sender was told to retry...
            gate.open.set()
            deadline = time.monotonic() + 10
            while count(app, Message) < 1:  # (a loaded machine may take a while)
                assert time.monotonic() < deadline, "the slow worker never stored it"
                time.sleep(0.01)
            # ...and the retry finds it stored: one message, not two.
            with smtplib.SMTP(host, port) as client:
                assert client.sendmail(SENDER, ["support@example.com"], message(13)) == {}
        assert count(app, Message) == 1
    finally:
        app.close()


@contextmanager
def database_unavailable(app: App, database_url: str) -> Iterator[None]:
    """Make the real database refuse work, then bring it back.

    SQLite: another process-level connection holds the write lock (what a
    stuck writer or a backup does). PostgreSQL: the database stops accepting
    connections and the existing ones are terminated (what a restart does).
    """
    if database_url.startswith("sqlite"):
        import sqlite3

        path = database_url.removeprefix("sqlite:///")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    from sqlalchemy import create_engine, text

    name = database_url.rsplit("/", 1)[1]
    admin = create_engine(
        database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_database_outage_gets_451_and_the_retry_is_stored_once(
    make_config: Any, database_url: str
) -> None:
    app = App.open(make_config("[storage]\nbusy_timeout_seconds = 0.5\n"))
    try:
        with running_listener(app) as running:
            host, port = running.address
            # Warm the pool first, so the outage hits live connections too.
            with smtplib.SMTP(host, port) as client:
                client.sendmail(SENDER, ["support@example.com"], message("warm"))
            with database_unavailable(app, database_url), smtplib.SMTP(host, port) as client:
                client.ehlo()
                client.mail(SENDER)
                client.rcpt("support@example.com")
                assert reply_line(*client.data(message(14))) == replies.TEMPFAIL
            with app.db.session() as s:
                ids = s.scalars(select(Message.message_id)).all()
            assert ids == ["<smtp-warm@customer.test>"]  # nothing half-written
            # The database is back: the MTA's retry is stored, exactly once.
            for _ in range(2):
                with smtplib.SMTP(host, port) as client:
                    assert client.sendmail(SENDER, ["support@example.com"], message(14)) == {}
            assert running.channel is not None
            listener = running.channel.listeners[0]
            assert listener.health.consecutive_failures == 0
        with app.db.session() as s:
            assert (
                s.scalar(
                    select(func.count()).where(Message.message_id == "<smtp-14@customer.test>")
                )
                == 1
            )
            status = s.get(ChannelStatus, f"smtp:{host}:{port}")
            assert status is not None and status.kind == "smtp"
            assert status.last_failure_at is not None and "unavailable" in status.last_error
            assert status.last_success_at is not None
            assert status.last_success_at > status.last_failure_at
            assert status.consecutive_failures == 0
    finally:
        app.close()


def test_session_protocol_errors_do_not_break_the_listener(app: App) -> None:
    """Garbage, a dropped connection mid-DATA, then a normal message."""
    with smtp_listener(app) as (host, port):
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.recv(1024)
            raw.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<support@example.com>\r\n")
            raw.sendall(b"DATA\r\nSubject: half\r\n\r\nnever finished")
        with smtplib.SMTP(host, port) as client:
            assert client.sendmail(SENDER, ["support@example.com"], message(15)) == {}
    with app.db.session() as s:
        assert s.scalars(select(Message.subject)).all() == ["Printer 15"]


def test_pipeline_direct_and_smtp_agree_on_duplicates(app: App) -> None:
    first = app.pipeline.ingest(message(16), Envelope(channel="pipe"))
    assert first.outcome is Outcome.NEW_CASE
    with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("support@example.com")
        assert reply_line(*client.data(message(16))) == "250 2.0.0 Ok: already stored"
    assert count(app, Message) == 1
