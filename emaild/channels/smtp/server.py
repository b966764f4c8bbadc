"""The SMTP/LMTP protocol side: sessions, the aiosmtpd hooks and one listener.

Everything here runs on the event loop. What a session needs of the channel
that owns it (limits, counters, lookups, the pipeline) is ``ChannelHost``;
``SmtpChannel`` is the one implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from emaild.accept_from import sender_allowed
from emaild.channels.health import ChannelHealth
from emaild.channels.smtp.anvil import Anvil
from emaild.channels.smtp.auth import AuthMixin
from emaild.channels.smtp.budget import TOO_MUCH_IN_FLIGHT, DataBudget
from emaild.channels.smtp.data import SpooledMessage, install_data
from emaild.channels.smtp.guard import guard_commands
from emaild.channels.smtp.peers import peer_host, peer_label
from emaild.channels.smtp.replies import (
    BUSY,
    DISABLED_REJECT,
    DISABLED_TEMPFAIL,
    RCPT_OK,
    REJECTED,
    SENDER_NOT_ALLOWED,
    SHUTTING_DOWN,
    TEMPFAIL,
    TEMPFAIL_INTERNAL,
    TEMPFAIL_TIMEOUT,
    TOO_FAST_FROM_YOU,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_FROM_YOU,
    TOO_MANY_RECIPIENTS,
    UNKNOWN_RECIPIENT,
    UNUSABLE,
    enhanced,
    stored_reply,
)
from emaild.channels.smtp.timeouts import AdaptiveTimeout
from emaild.config import Config, RoutingAddress, SmtpConfig
from emaild.errors import InputError, TransientError
from emaild.observe import metrics
from emaild.pipeline import Envelope, IngestResult
from emaild.store.blobs import Spool
from emaild.text import one_line

log = structlog.get_logger("emaild.smtp")
Kind = Literal["smtp", "lmtp"]
# How much of an error a 5xx reply line repeats.
DETAIL_CHARS = 200


class ChannelHost(Protocol):
    """What sessions, hooks and listeners use of the channel that owns them."""

    closing: bool
    sessions: set[SessionMixin]
    anvil: Anvil
    data_budget: DataBudget
    hostname: str
    tls: ssl.SSLContext | None
    credentials: dict[str, str]
    loop: asyncio.AbstractEventLoop | None
    accepted: int
    tempfailed: int
    rejected: int
    refused: int

    def config(self) -> Config: ...

    def limits(self) -> SmtpConfig: ...

    def session_started(self, session: SessionMixin) -> None: ...

    def session_ended(self, session: SessionMixin) -> None: ...

    def busy(self) -> bool: ...

    def admit(self) -> bool: ...

    def new_spool(self) -> Spool: ...

    async def ingest(self, message: SpooledMessage, envelope: Envelope) -> IngestResult: ...

    async def lookup(self, address: str) -> RoutingAddress | None: ...

    async def check_password(self, user: str, password: bytes, host: str = "") -> bool: ...


# --- per-session record, logged once when the session ends ---------------------------
@dataclass
class SessionRecord:
    """What happened in one connection: one log event carries all of it."""

    peer: str
    started: float = field(default_factory=time.monotonic)
    helo: str = ""
    user: str = ""
    tls: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


class SessionMixin(AdaptiveTimeout, AuthMixin):
    """Shared by the SMTP and LMTP protocol classes: limits, drain, replies, AUTH.

    One protocol object serves one connection.
    """

    listener: Listener
    record: SessionRecord
    _counted: bool
    _said_goodbye: bool
    _host: str

    def _setup(self, listener: Listener) -> None:
        self.listener = listener
        self.record = SessionRecord(peer="")
        self._counted = False
        self._said_goodbye = False
        self._host = ""

    def connection_made(self, transport: Any) -> None:
        this: Any = self
        if this._original_transport is not None:  # the TLS layer after STARTTLS
            super().connection_made(transport)  # type: ignore[misc]
            self.record.tls = True
            return
        channel = self.listener.channel
        self.record.peer = peer_label(transport.get_extra_info("peername"))
        limits = channel.limits()
        reply = ""
        if channel.closing or len(channel.sessions) >= limits.max_connections:
            reply = SHUTTING_DOWN if channel.closing else TOO_MANY_CONNECTIONS
        else:
            self._host = peer_host(transport.get_extra_info("peername"))
            refused = channel.anvil.admit(
                self._host,
                max_sessions=limits.max_connections_per_ip,
                max_rate=limits.max_connection_rate_per_ip,
            )
            if refused:
                reply = TOO_MANY_FROM_YOU if refused == "sessions" else TOO_FAST_FROM_YOU
        if reply:
            # Refuse before aiosmtpd starts the session: no greeting, no handler task.
            transport.write(reply.encode("ascii") + b"\r\n")
            transport.close()
            channel.refused += 1
            metrics.smtp_reply(self.listener.kind, reply)
            return
        self._counted = True
        channel.session_started(self)
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, error: Exception | None) -> None:
        if not self._counted:
            return  # refused in connection_made; aiosmtpd never set up a session
        self._counted = False
        try:
            super().connection_lost(error)  # type: ignore[misc]
        finally:
            self.listener.channel.anvil.ended(self._host)
            self.listener.channel.session_ended(self)
            self._log_session()

    def data_received(self, data: bytes) -> None:
        if self._counted:
            super().data_received(data)  # type: ignore[misc]

    def eof_received(self) -> bool | None:
        if not self._counted:
            return False
        result: bool | None = super().eof_received()  # type: ignore[misc]
        return result

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            status = enhanced(status)
        await super().push(status)  # type: ignore[misc]
        metrics.smtp_reply(self.listener.kind, status)
        # Draining: once the transaction in progress is answered, say goodbye.
        if self.listener.channel.closing and not self.in_transaction():
            await self.goodbye()

    def in_transaction(self) -> bool:
        """True between MAIL and the final reply to DATA (or RSET)."""
        this: Any = self
        return bool(this.envelope is not None and this.envelope.mail_from)

    async def goodbye(self, reply: str = SHUTTING_DOWN) -> None:
        """Send ``421`` and close (RFC 5321 4.1.4: the server may close after 421)."""
        this: Any = self
        if self._said_goodbye or this.transport is None:
            return
        self._said_goodbye = True
        this._writer.write(reply.encode("ascii") + b"\r\n")
        metrics.smtp_reply(self.listener.kind, reply)
        with contextlib.suppress(ConnectionError):
            await this._writer.drain()
        if this.transport is not None:
            this.transport.close()

    def abort(self) -> None:
        """Deadline passed: ``421`` and close now, mid-transaction or not."""
        this: Any = self
        if this.transport is None:
            return
        if not self._said_goodbye:
            self._said_goodbye = True
            with contextlib.suppress(Exception):
                this.transport.write(SHUTTING_DOWN.encode("ascii") + b"\r\n")
            metrics.smtp_reply(self.listener.kind, SHUTTING_DOWN)
        this.transport.close()

    async def _check_login(self, login: bytes, password: bytes) -> Any:
        user = login.decode("utf-8", "replace")
        ok = await self.listener.channel.check_password(user, password, self._host)
        if ok:
            self.record.user = user
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        log.warning("smtp.auth_failed", peer=self.record.peer, user=user)
        return AuthResult(success=False, handled=False)

    def _log_session(self) -> None:
        r = self.record
        log.info(
            f"{self.listener.kind}.session",
            listener=self.listener.label,
            peer=r.peer,
            helo=r.helo,
            tls=r.tls,
            user=r.user or None,
            messages=r.messages,
            rejected=r.rejected,
            duration_ms=round((time.monotonic() - r.started) * 1000, 1),
        )


class SmtpSession(SessionMixin, SMTP):
    """One SMTP connection."""

    def __init__(self, listener: Listener, **kwargs: Any) -> None:
        self._setup(listener)
        # Set before aiosmtpd's __init__, which sizes the stream reader from it.
        self.line_length_limit = listener.channel.config().smtp.max_line_length
        super().__init__(listener.handler, **kwargs)
        guard_commands(self)
        install_data(self)


class LmtpSession(SessionMixin, LMTP):
    """One LMTP connection (RFC 2033: LHLO, one DATA status per recipient)."""

    def __init__(self, listener: Listener, **kwargs: Any) -> None:
        self._setup(listener)
        self.line_length_limit = listener.channel.config().smtp.max_line_length
        super().__init__(listener.handler, **kwargs)
        guard_commands(self)
        install_data(self)


# --- handler: the aiosmtpd hooks ------------------------------------------------------
class IntakeHandler:
    """aiosmtpd hooks: recipient checks at RCPT, storage at DATA."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        server.record.helo = hostname
        if not self.listener.channel.credentials:
            # No credentials file: AUTH is not offered at all.
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        return responses

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        session.host_name = hostname
        server.record.helo = hostname
        return f"250 {server.hostname}"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = await self._check_recipient(envelope, address)
        if reply == RCPT_OK:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        else:
            server.record.rejected.append({"rcpt": address, "reply": reply})
        return reply

    async def _check_recipient(self, envelope: Any, address: str) -> str:
        channel = self.listener.channel
        config = channel.config()
        if len(envelope.rcpt_tos) >= config.smtp.max_recipients:
            return TOO_MANY_RECIPIENTS
        if channel.busy():
            return BUSY
        try:
            routing = await channel.lookup(address)
        except TransientError as exc:
            self.listener.health.failure(str(exc))
            return TEMPFAIL
        if routing is None:
            return UNKNOWN_RECIPIENT
        if not routing.enabled:
            return DISABLED_REJECT if routing.disabled_action == "reject" else DISABLED_TEMPFAIL
        sender = _sender(envelope)
        if routing.reject_action == "reject" and not sender_allowed(routing, sender):
            # "Accept email from": refuse before the body is sent; discard and
            # quarantine actions are the pipeline's (it keeps the raw mail).
            return SENDER_NOT_ALLOWED
        return RCPT_OK

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message: SpooledMessage = server.spooled  # set by data.data_command
        recipients = tuple(envelope.rcpt_tos)
        env = Envelope(
            channel=self.listener.kind,
            mail_from=_sender(envelope),
            rcpt_to=recipients,
            peer=server.record.peer,
            helo=server.record.helo,
        )
        reply, result = await self.listener.store(message, env)
        server.record.messages.append(
            {
                "from": env.mail_from,
                "to": list(recipients),
                "size": message.size,
                "reply": reply,
                "outcome": result.outcome.value if result else None,
                "case": result.case_number if result else None,
            }
        )
        if self.listener.kind == "lmtp":
            # RFC 2033 4.2: one reply per successful RCPT, in order. The message
            # is stored once for all of them, so they share its outcome.
            return "\r\n".join([reply] * len(recipients))
        return reply

    async def handle_exception(self, error: Exception) -> str:
        # A bug in protocol handling: tell the client to retry, lose nothing.
        log.error("smtp.internal_error", error=f"{type(error).__name__}: {error}", exc_info=error)
        self.listener.health.failure(f"internal error: {type(error).__name__}: {error}")
        return TEMPFAIL_INTERNAL


def _sender(envelope: Any) -> str:
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else str(sender)


# --- one listening socket --------------------------------------------------------------
class Listener:
    """One listening socket speaking SMTP or LMTP."""

    def __init__(self, channel: ChannelHost, kind: Kind, label: str) -> None:
        self.channel = channel
        self.kind = kind
        self.label = label
        self.handler = IntakeHandler(self)
        self.health = ChannelHealth(f"{kind}:{label}", kind)
        self.server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); useful when bound to port 0."""
        assert self.server is not None and self.server.sockets
        name = self.server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    def make_session(self) -> SmtpSession | LmtpSession:
        config = self.channel.config()
        kwargs: dict[str, Any] = {
            "data_size_limit": config.limits.max_message_bytes,
            "hostname": self.channel.hostname,
            "ident": f"emaild {'LMTP' if self.kind == 'lmtp' else 'ESMTP'}",
            "timeout": config.smtp.timeout_seconds,
            "tls_context": self.channel.tls,
            "require_starttls": config.smtp.require_tls,
            "auth_required": config.smtp.auth_required,
            "auth_require_tls": True,
            "enable_SMTPUTF8": True,
            "loop": self.channel.loop,
        }
        return (LmtpSession if self.kind == "lmtp" else SmtpSession)(self, **kwargs)

    async def store(
        self, message: SpooledMessage, envelope: Envelope
    ) -> tuple[str, IngestResult | None]:
        """Run the pipeline for one received message; the reply to send and the result."""
        channel = self.channel
        if not channel.admit():
            return BUSY, None
        timeout = channel.config().limits.pipeline_timeout_seconds
        try:
            result = await asyncio.wait_for(channel.ingest(message, envelope), timeout)
        except TransientError as exc:
            self.health.failure(str(exc))
            channel.tempfailed += 1
            return TEMPFAIL, None
        except TimeoutError:
            if message.waiting_for_budget and not message.admitted:
                # Never loaded: the memory budget stayed full (budget.py).
                channel.tempfailed += 1
                return TOO_MUCH_IN_FLIGHT, None
            # The worker may still commit later; the retry is then a duplicate,
            # stored once (contract 2). What must never happen is a 250 before.
            self.health.failure(f"pipeline took longer than {timeout}s")
            channel.tempfailed += 1
            return TEMPFAIL_TIMEOUT, None
        except InputError as exc:
            channel.rejected += 1
            return UNUSABLE.format(detail=one_line(str(exc), DETAIL_CHARS)), None
        except Exception as exc:  # a bug: retry later rather than lose the message
            log.error("smtp.ingest_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            self.health.failure(f"internal error: {type(exc).__name__}: {exc}")
            channel.tempfailed += 1
            return TEMPFAIL_INTERNAL, None
        self.health.success()
        if not result.stored:
            channel.rejected += 1
            return REJECTED.format(
                detail=one_line(result.detail or "by policy", DETAIL_CHARS)
            ), result
        channel.accepted += 1
        return stored_reply(result), result
