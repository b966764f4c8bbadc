"""Issue 18 §4 (partly): DATA bytes in flight are bounded by a budget.

On a real socket: a transfer reserves its declared SIZE (else the message
size limit) at the DATA command; one that does not fit gets 451 4.3.2 before
sending a byte, and every message that gets 250 is stored byte-exact. A
client is held to the SIZE it declared.
"""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from typing import Any

from mailbuilder import build_mail
from smtp_helpers import running_listener
from sqlalchemy import select

from emaild.app import App
from emaild.channels.smtp.budget import TOO_MUCH_IN_FLIGHT
from emaild.store.models import Message

CONFIG = "[limits]\ndata_bytes_in_flight = 1048576\nmax_message_bytes = 700000\n"
DECLARED = 700_000


def _reply(sock: socket.socket) -> str:
    data = b""
    while not any(len(x) > 3 and x[3:4] == b" " for x in data.split(b"\r\n")[:-1]):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data.decode().strip().splitlines()[-1]


def _open_transaction(address: tuple[str, int], size: int = 0) -> socket.socket:
    sock = socket.create_connection(address, 10)
    sock.settimeout(10)
    assert _reply(sock).startswith("220")
    for line in (
        b"EHLO client.test",
        b"MAIL FROM:<a@customer.test>" + (b" SIZE=%d" % size if size else b""),
        b"RCPT TO:<support@example.com>",
    ):
        sock.sendall(line + b"\r\n")
        assert _reply(sock).startswith("250"), line
    return sock


def _body(n: int, size: int) -> bytes:
    text = ("line of text in the message body\r\n" * (size // 34))[:size]
    return build_mail(message_id=f"<budget-{n}@customer.test>", body=text)


def _stored(app: App, message_id: str) -> bytes:
    with app.db.session() as s:
        row = s.scalars(select(Message).where(Message.message_id == message_id)).one()
        return app.blobs.read(row.raw_sha256)


def test_data_over_the_budget_is_told_451_and_stored_mail_is_exact(make_app: Any) -> None:
    app: App = make_app(CONFIG)
    with running_listener(app) as running:
        first = _open_transaction(running.address, size=DECLARED)
        second = _open_transaction(running.address, size=DECLARED)
        first.sendall(b"DATA\r\n")
        assert _reply(first).startswith("354")  # reserves 700000 of 1048576
        second.sendall(b"DATA\r\n")
        assert _reply(second) == TOO_MUCH_IN_FLIGHT
        raw = _body(1, 600_000)
        first.sendall(raw + b".\r\n")
        assert _reply(first).startswith("250")
        # The first message was answered: its reservation is back.
        second.sendall(b"DATA\r\n")
        assert _reply(second).startswith("354")
        raw2 = _body(2, 500_000)
        second.sendall(raw2 + b".\r\n")
        assert _reply(second).startswith("250")
        first.close()
        second.close()
        assert running.channel is not None
        time.sleep(0.2)  # the session's DATA coroutine finishes after the reply
        budget = running.channel.data_budget
        assert budget.high_water <= 1048576 and budget.in_flight == 0
    assert _stored(app, "<budget-1@customer.test>") == raw
    assert _stored(app, "<budget-2@customer.test>") == raw2


def test_declared_sizes_share_the_budget(make_app: Any) -> None:
    app: App = make_app(CONFIG)
    with running_listener(app) as running:
        socks = [_open_transaction(running.address, size=300_000) for _ in range(4)]
        replies = []
        for sock in socks:
            sock.sendall(b"DATA\r\n")
            replies.append(_reply(sock))
        # 3 x 300000 fit in 1048576, the fourth does not.
        assert [r[:3] for r in replies] == ["354", "354", "354", "451"]
        for sock in socks:
            sock.close()


def test_a_client_is_held_to_its_declared_size(make_app: Any) -> None:
    app: App = make_app(CONFIG)
    with running_listener(app) as running:
        sock = _open_transaction(running.address, size=1000)
        sock.sendall(b"DATA\r\n")
        assert _reply(sock).startswith("354")
        sock.sendall(_body(3, 100_000) + b".\r\n")  # over 2 x 1000 + 64 KiB
        assert _reply(sock).startswith("552")
        sock.close()


def test_concurrent_clients_each_stored_exact_or_told_451(make_app: Any) -> None:
    app: App = make_app(CONFIG)
    results: dict[int, tuple[int, bytes] | str] = {}
    messages = {n: _body(10 + n, 400_000) for n in range(6)}

    def send(n: int, address: tuple[str, int]) -> None:
        try:
            with smtplib.SMTP(*address, timeout=30) as client:
                client.sendmail("a@customer.test", ["support@example.com"], messages[n])
                results[n] = (250, b"")
        except smtplib.SMTPDataError as exc:
            results[n] = (exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPException as exc:  # recorded: the assertion below names it
            results[n] = repr(exc)

    with running_listener(app) as running:
        threads = [threading.Thread(target=send, args=(n, running.address)) for n in messages]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert running.channel is not None
        assert running.channel.data_budget.high_water <= 1048576
    for n, outcome in results.items():
        assert isinstance(outcome, tuple), outcome
        if outcome[0] == 250:
            assert _stored(app, f"<budget-{10 + n}@customer.test>") == messages[n]
        else:
            assert outcome[0] == 451 and b"4.3.2" in outcome[1], outcome
    assert len(results) == len(messages) and any(o[0] == 250 for o in results.values())  # type: ignore[index]
