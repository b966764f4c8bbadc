"""Issue 18 §3: idle, trickling and flooding clients lock out only themselves.

On a real socket: one loopback address exhausts its per-address connection
limit (or its connection rate) and a client from 127.0.0.2 is still stored
within a second; idle sessions before MAIL FROM are closed after the short
idle timeout, and every timeout shrinks under stress. Failed logins are
throttled per address and per user without locking the user out elsewhere.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from mailbuilder import build_mail, count
from smtp_helpers import smtp_listener

from emaild.app import App
from emaild.channels.smtp import replies
from emaild.channels.smtp.anvil import AuthThrottle
from emaild.store.models import Case


def _greeted(address: tuple[str, int], source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(address, 5, source_address=(source, 0))
    sock.settimeout(5)
    return sock


def _first_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")[0].decode()


def _store_from(source: str, address: tuple[str, int], n: int) -> float:
    """Send one message from ``source``; the seconds it took to get its 250."""
    started = time.monotonic()
    with smtplib.SMTP(*address, source_address=(source, 0), timeout=10) as client:
        client.sendmail(
            "a@customer.test", ["support@example.com"], build_mail(message_id=f"<f{n}@c.test>")
        )
    return time.monotonic() - started


@contextmanager
def idle_sessions(address: tuple[str, int], n: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        socks = []
        for _ in range(n):
            sock = stack.enter_context(_greeted(address))
            assert _first_line(sock).startswith("220")
            socks.append(sock)
        yield socks


def test_one_address_exhausts_only_its_own_connections(make_app: Any) -> None:
    app: App = make_app("[smtp]\nmax_connections = 50\nmax_connections_per_ip = 5\n")
    with smtp_listener(app) as address, idle_sessions(address, 5):
        with _greeted(address) as sixth:
            assert _first_line(sixth) == replies.TOO_MANY_FROM_YOU
        # The attacker's address is full; a client from another one is served.
        assert _store_from("127.0.0.2", address, 1) < 1.0
    assert count(app, Case) == 1


def test_one_address_over_its_connection_rate_is_refused(make_app: Any) -> None:
    app: App = make_app("[smtp]\nmax_connection_rate_per_ip = 3\n")
    with smtp_listener(app) as address:
        for _ in range(3):
            with _greeted(address) as sock:
                assert _first_line(sock).startswith("220")
                sock.sendall(b"QUIT\r\n")
        with _greeted(address) as fourth:
            assert _first_line(fourth) == replies.TOO_FAST_FROM_YOU
        assert _store_from("127.0.0.2", address, 2) < 1.0


def test_idle_session_before_mail_is_closed_but_a_transaction_is_not(make_app: Any) -> None:
    app: App = make_app("[smtp]\nidle_timeout_seconds = 0.5\ntimeout_seconds = 30\n")
    with smtp_listener(app) as address:
        with _greeted(address) as idle:
            assert _first_line(idle).startswith("220")
            started = time.monotonic()
            assert idle.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 3.0
        with smtplib.SMTP(*address, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("a@customer.test")
            time.sleep(1.0)  # twice the idle timeout, inside a transaction
            assert client.rcpt("support@example.com")[0] == 250


def test_timeouts_shrink_under_stress(make_app: Any) -> None:
    app: App = make_app(
        "[smtp]\nmax_connections = 4\nidle_timeout_seconds = 30\nstress_timeout_seconds = 0.5\n"
    )
    # The third session takes the listener to 3/4 of its connections.
    with smtp_listener(app) as address, idle_sessions(address, 2), _greeted(address) as third:
        assert _first_line(third).startswith("220")
        started = time.monotonic()
        assert third.recv(1024) == b""
        assert time.monotonic() - started < 3.0


def test_failed_logins_are_throttled_per_address_and_per_user() -> None:
    throttle = AuthThrottle()
    limits = {"per_ip": 3, "per_user": 2}
    for user in ("u1", "u2", "alice"):
        assert throttle.allowed("10.0.0.1", user, **limits)
        throttle.failed("10.0.0.1", user)
    # That address is refused for any user, unchecked.
    assert not throttle.allowed("10.0.0.1", "bob", **limits)
    # alice has failures, but from a clean address she is still checked.
    assert throttle.allowed("10.0.0.2", "alice", **limits)
    throttle.failed("10.0.0.2", "alice")
    # An address that failed once may not keep guessing alice's password.
    assert not throttle.allowed("10.0.0.2", "alice", **limits)
    assert throttle.allowed("10.0.0.2", "bob", **limits)
    assert throttle.allowed("10.0.0.3", "alice", **limits)
