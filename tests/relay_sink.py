"""A real SMTP server on loopback that records what it receives: the relay in tests.

``RelaySink`` runs aiosmtpd on an ephemeral port in its own thread. Tests point
emaild's relay at it (``sink.relay_env`` / ``sink.relay_toml``), then read
``sink.messages``. Its behaviour can be switched while it runs:

- ``sink.mode = "accept"``   250 for everything (the default)
- ``sink.mode = "tempfail"`` answer ``sink.tempfail_reply`` (4xx) at ``sink.refuse_at``
- ``sink.mode = "reject"``   answer ``sink.reject_reply`` (5xx) at ``sink.refuse_at``
- ``sink.mode = "drop"``     close the connection without answering DATA
- ``sink.stop()`` / ``sink.start()``: the relay is down / back on the same port

``refuse_at`` is ``"rcpt"`` (the usual place for "no such user") or ``"data"``.
STARTTLS (a throwaway self-signed certificate made with openssl) and AUTH
(one user, one password) are opt-in through the constructor.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

Mode = Literal["accept", "tempfail", "reject", "drop"]


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the relay saw it: envelope and raw bytes."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: str
    tls: bool
    auth_user: str
    mail_options: tuple[str, ...] = ()

    def message(self) -> email.message.EmailMessage:
        """The received bytes parsed with the stdlib (modern policy)."""
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg


@dataclass
class _Counters:
    connections: int = 0
    refused: int = 0
    dropped: int = 0
    rcpt: list[str] = field(default_factory=list)


class _Handler:
    """aiosmtpd hooks: consult the sink's mode at RCPT and DATA."""

    def __init__(self, sink: RelaySink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.sink._lock:
            self.sink.counters.connections += 1
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.sink._lock:
            self.sink.counters.rcpt.append(address)
        refusal = self.sink._refusal("rcpt")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        sink = self.sink
        if sink.mode == "drop":
            with sink._lock:
                sink.counters.dropped += 1
            # Abort the TCP connection: the client sees the relay vanish mid-transaction.
            server.transport.abort()
            return "421 4.3.0 dropped"
        refusal = sink._refusal("data")
        if refusal:
            return refusal
        if sink.data_delay:  # a slow relay: the sender's attempt stays under way meanwhile
            await asyncio.sleep(sink.data_delay)
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        auth_user = ""
        if session.auth_data is not None:
            auth_user = session.auth_data.login.decode()
        mail = ReceivedMail(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            peer=peer,
            tls=session.ssl is not None,
            auth_user=auth_user,
            mail_options=tuple(envelope.mail_options),
        )
        with sink._lock:
            sink.messages.append(mail)
            sink._arrived.notify_all()
        return "250 2.0.0 queued"


class _EphemeralController(Controller):  # type: ignore[misc]
    """aiosmtpd's Controller bound to port 0: learn the real port before the self-check."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost (openssl CLI)."""
    cert, key = directory / "relay-cert.pem", directory / "relay-key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found: cannot make a test certificate")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class RelaySink:
    """An aiosmtpd relay on 127.0.0.1:<ephemeral> collecting envelopes."""

    def __init__(
        self,
        *,
        tls_cert: tuple[Path, Path] | None = None,
        require_tls: bool = False,
        auth: tuple[str, str] | None = None,
        smtputf8: bool = False,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.mode: Mode = "accept"
        self.refuse_at: Literal["rcpt", "data"] = "rcpt"
        self.tempfail_reply = "451 4.3.0 try again later"
        self.reject_reply = "550 5.1.1 no such user"
        self.data_delay = 0.0  # seconds before the answer to DATA
        self.messages: list[ReceivedMail] = []
        self.counters = _Counters()
        self.tls_cert = tls_cert
        self.auth = auth
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        # SMTPUTF8 (RFC 6531) offered in EHLO only when asked: most tests want a plain relay.
        self._kwargs: dict[str, Any] = {"enable_SMTPUTF8": smtputf8}
        if tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
            self._kwargs["tls_context"] = context
            self._kwargs["require_starttls"] = require_tls
        if auth is not None:
            # aiosmtpd (rightly) warns about AUTH in clear; tests use it over STARTTLS.
            if tls_cert is None:
                raise ValueError("auth needs tls_cert: AUTH is only offered after STARTTLS")
            self._kwargs["authenticator"] = self._authenticate
            self._kwargs["auth_required"] = True
            self._kwargs["auth_require_tls"] = True
        self._controller: _EphemeralController | None = None

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> RelaySink:
        """Start listening; after ``stop()`` this comes back on the same port."""
        if self._controller is not None:
            return self
        controller = _EphemeralController(
            _Handler(self), hostname=self.host, port=self.port, **self._kwargs
        )
        controller.start()
        self.port = controller.port
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening (the relay is down: connections are refused)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    # --- what the test points emaild at -----------------------------------------
    @property
    def address(self) -> str:
        """``HOST:PORT`` for ``EMAILD_SMTP_RELAY``."""
        return f"{self.host}:{self.port}"

    @property
    def relay_env(self) -> dict[str, str]:
        return {"EMAILD_SMTP_RELAY": self.address}

    # --- reading what arrived -----------------------------------------------------
    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"relay sink got {len(self.messages)} messages, expected {count}"
                    )
                self._arrived.wait(left)
            return list(self.messages)

    def received(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self.messages)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    # --- internals ------------------------------------------------------------------
    def _refusal(self, stage: str) -> str:
        if stage != self.refuse_at:
            return ""
        if self.mode == "tempfail":
            reply = self.tempfail_reply
        elif self.mode == "reject":
            reply = self.reject_reply
        else:
            return ""
        with self._lock:
            self.counters.refused += 1
        return reply

    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.auth is None:
            return AuthResult(success=False, handled=False)
        ok = (data.login.decode(), data.password.decode()) == self.auth
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)
