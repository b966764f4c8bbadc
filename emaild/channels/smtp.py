"""The SMTP/LMTP channel: aiosmtpd listeners in front of ``Pipeline.ingest``.

Protocol handling stays on the event loop; the synchronous pipeline runs in a
bounded thread pool. Nothing is answered ``250`` before ``ingest`` returned a
stored outcome (contract 1). Storage trouble or a timeout answers ``451 4.3.0``
so the sender retries; the pipeline's deduplication makes the retry land once
(contract 2). Only routing addresses are accepted at ``RCPT`` (never an open
relay). LMTP answers one status per accepted recipient (RFC 2033) for the one
stored message.

Back-pressure instead of unbounded queues: at most ``smtp.max_connections``
sessions (more get ``421``), at most ``smtp.max_pending`` messages waiting for
or inside the pipeline (more get ``451 4.3.2``, checked at ``RCPT`` so the body
is not even sent, and again after ``DATA``).

No ``Received:`` header is added: the stored raw bytes must be exactly what the
sender sent, or a retried message without a Message-ID would no longer be
recognised as the same bytes. The envelope is stored beside the message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import socket
import ssl
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from emaild.accept_from import sender_allowed
from emaild.channels.health import ChannelHealth
from emaild.channels.smtp_auth import load_credentials, tls_context, verify_password
from emaild.config import Config, RoutingAddress, SmtpConfig
from emaild.errors import ConfigError, InputError, TransientError
from emaild.pipeline import Envelope, IngestResult, Outcome

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.smtp")
Kind = Literal["smtp", "lmtp"]

# --- Replies: RFC 5321 code + RFC 3463 enhanced status --------------------------------
RCPT_OK = "250 2.1.5 Ok"
UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: not a routing address here"
SENDER_NOT_ALLOWED = "550 5.7.1 Sender not accepted for this address"
DISABLED_TEMPFAIL = "450 4.2.1 Mailbox temporarily disabled; try again later"
DISABLED_REJECT = "550 5.2.1 Mailbox disabled; not accepting messages"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
TEMPFAIL = "451 4.3.0 Temporary failure storing the message; try again later"
TEMPFAIL_TIMEOUT = "451 4.3.0 Timed out storing the message; try again later"
TEMPFAIL_INTERNAL = "451 4.3.0 Internal error; try again later"
BUSY = "451 4.3.2 Too busy; try again later"
TOO_MANY_CONNECTIONS = "421 4.3.2 Too many connections; try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down; try again later"
UNUSABLE = "554 5.6.0 Message unusable: {detail}"
REJECTED = "550 5.7.1 Message rejected: {detail}"

# aiosmtpd's own fixed replies, given enhanced status codes (RFC 3463) so that
# MTAs log a precise reason (contract 5).
_ENHANCED = {
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
}


def stored_reply(result: IngestResult) -> str:
    """The ``250`` line for a stored outcome (the case number helps support staff)."""
    o = result.outcome
    if o is Outcome.NEW_CASE:
        return f"250 2.0.0 Ok: new case {result.case_number}"
    if o is Outcome.APPENDED:
        return f"250 2.0.0 Ok: added to case {result.case_number}"
    if o is Outcome.DUPLICATE:
        return "250 2.0.0 Ok: already stored"
    if o is Outcome.QUARANTINED:
        return f"250 2.0.0 Ok: stored in quarantine as entry {result.quarantine_id}"
    return f"250 2.0.0 Ok: stored ({o.value})"


def parse_listen(value: str, key: str = "smtp.listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into a (host, port) pair."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {value!r}", key=key)
    return host, int(port)


def _label(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


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


class _SessionMixin:
    """Shared by the SMTP and LMTP protocol classes: limits, drain, replies, AUTH.

    One protocol object serves one connection.
    """

    listener: Listener
    record: SessionRecord
    _counted: bool
    _said_goodbye: bool

    def _setup(self, listener: Listener) -> None:
        self.listener = listener
        self.record = SessionRecord(peer="")
        self._counted = False
        self._said_goodbye = False

    def connection_made(self, transport: Any) -> None:
        this: Any = self
        if this._original_transport is not None:  # the TLS layer after STARTTLS
            super().connection_made(transport)  # type: ignore[misc]
            self.record.tls = True
            return
        channel = self.listener.channel
        self.record.peer = _label(transport.get_extra_info("peername"))
        if channel.closing or len(channel.sessions) >= channel.limits().max_connections:
            # Refuse before aiosmtpd starts the session: no greeting, no handler task.
            reply = SHUTTING_DOWN if channel.closing else TOO_MANY_CONNECTIONS
            transport.write(reply.encode("ascii") + b"\r\n")
            transport.close()
            channel.refused += 1
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
            status = _ENHANCED.get(status, status)
        await super().push(status)  # type: ignore[misc]
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
        this.transport.close()

    # AUTH: aiosmtpd's built-in PLAIN/LOGIN verify synchronously on the event
    # loop; PBKDF2 is deliberately slow, so ours verify in a worker thread.
    async def auth_PLAIN(self, _: Any, args: list[str]) -> Any:
        this: Any = self
        if len(args) == 1:
            blob = await this.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except binascii.Error:
                await this.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await this.push("501 5.5.2 Cannot split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check_login(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> Any:
        this: Any = self
        if len(args) == 1:
            login = await this.challenge_auth(this.AuthLoginUsernameChallenge)
            if not isinstance(login, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = base64.b64decode(args[1].encode(), validate=True)
            except binascii.Error:
                await this.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await this.challenge_auth(this.AuthLoginPasswordChallenge)
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._check_login(login, password)

    async def _check_login(self, login: bytes, password: bytes) -> Any:
        user = login.decode("utf-8", "replace")
        ok = await self.listener.channel.check_password(user, password)
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


class SmtpSession(_SessionMixin, SMTP):
    """One SMTP connection."""

    def __init__(self, listener: Listener, **kwargs: Any) -> None:
        self._setup(listener)
        # Set before aiosmtpd's __init__, which sizes the stream reader from it.
        self.line_length_limit = listener.channel.config().smtp.max_line_length
        super().__init__(listener.handler, **kwargs)


class LmtpSession(_SessionMixin, LMTP):
    """One LMTP connection (RFC 2033: LHLO, one DATA status per recipient)."""

    def __init__(self, listener: Listener, **kwargs: Any) -> None:
        self._setup(listener)
        self.line_length_limit = listener.channel.config().smtp.max_line_length
        super().__init__(listener.handler, **kwargs)


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
        raw: bytes = envelope.original_content or b""
        recipients = tuple(envelope.rcpt_tos)
        env = Envelope(
            channel=self.listener.kind,
            mail_from=_sender(envelope),
            rcpt_to=recipients,
            peer=server.record.peer,
        )
        reply, result = await self.listener.store(raw, env)
        server.record.messages.append(
            {
                "from": env.mail_from,
                "to": list(recipients),
                "size": len(raw),
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


# --- listeners and the channel that owns them ----------------------------------------
class Listener:
    """One listening socket speaking SMTP or LMTP."""

    def __init__(self, channel: SmtpChannel, kind: Kind, label: str) -> None:
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

    async def store(self, raw: bytes, envelope: Envelope) -> tuple[str, IngestResult | None]:
        """Run the pipeline for one message; the reply to send and the result."""
        channel = self.channel
        if not channel.admit():
            return BUSY, None
        timeout = channel.config().limits.pipeline_timeout_seconds
        try:
            result = await asyncio.wait_for(channel.ingest(raw, envelope), timeout)
        except TransientError as exc:
            self.health.failure(str(exc))
            channel.tempfailed += 1
            return TEMPFAIL, None
        except TimeoutError:
            # The worker may still commit later; the retry is then a duplicate,
            # stored once (contract 2). What must never happen is a 250 before.
            self.health.failure(f"pipeline took longer than {timeout}s")
            channel.tempfailed += 1
            return TEMPFAIL_TIMEOUT, None
        except InputError as exc:
            channel.rejected += 1
            return UNUSABLE.format(detail=_one_line(str(exc))), None
        except Exception as exc:  # a bug: retry later rather than lose the message
            log.error("smtp.ingest_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            self.health.failure(f"internal error: {type(exc).__name__}: {exc}")
            channel.tempfailed += 1
            return TEMPFAIL_INTERNAL, None
        self.health.success()
        if not result.stored:
            channel.rejected += 1
            return REJECTED.format(detail=_one_line(result.detail or "by policy")), result
        channel.accepted += 1
        return stored_reply(result), result


def security_settings(smtp: SmtpConfig) -> tuple[ssl.SSLContext | None, dict[str, str]]:
    """The STARTTLS context and AUTH credentials ``smtp`` asks for, checked together."""
    tls = tls_context(smtp)
    credentials = load_credentials(Path(smtp.auth_file)) if smtp.auth_file else {}
    if smtp.auth_required and not credentials:
        raise ConfigError("auth_required needs an auth_file", key="smtp.auth_required")
    if credentials and tls is None:
        raise ConfigError("AUTH needs STARTTLS: set tls_cert and tls_key", key="smtp.auth_file")
    return tls, credentials


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


class SmtpChannel:
    """Every SMTP/LMTP listener of the process, sharing limits and the worker pool.

    ``executor`` runs the pipeline (the daemon's bounded pool); recipient
    lookups get two threads of their own so they never queue behind messages.
    """

    def __init__(self, app: App, executor: Executor) -> None:
        self.app = app
        self.executor = executor
        self._lookups = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emaild-rcpt")
        self.listeners: list[Listener] = []
        self.sessions: set[_SessionMixin] = set()
        self.closing = False
        self._goodbyes: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hostname = app.config.smtp.hostname or socket.getfqdn()
        self.tls, self.credentials = security_settings(app.config.smtp)
        self.accepted = 0
        self.tempfailed = 0
        self.rejected = 0
        self.refused = 0

    def config(self) -> Config:
        """The current config (SIGHUP may swap it; limits apply from the next use)."""
        return self.app.config

    def limits(self) -> SmtpConfig:
        """The current ``[smtp]`` settings."""
        return self.app.config.smtp

    # --- listening --------------------------------------------------------------
    async def listen(
        self, kind: Kind, address: str = "", *, sock: socket.socket | None = None
    ) -> Listener:
        """Bind ``address`` (``HOST:PORT``) or serve an inherited ``sock``."""
        self.loop = asyncio.get_running_loop()
        key = "smtp.lmtp_listen" if kind == "lmtp" else "smtp.listen"
        listener = Listener(self, kind, address)
        backlog = min(1024, self.limits().max_connections)
        try:
            if sock is not None:
                server = await self.loop.create_server(
                    listener.make_session, sock=sock, backlog=backlog
                )
            else:
                host, port = parse_listen(address, key)
                server = await self.loop.create_server(
                    listener.make_session, host, port, backlog=backlog, reuse_address=True
                )
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address}: {exc.strerror}", key=key) from None
        listener.server = server
        listener.label = _label(server.sockets[0].getsockname())
        listener.health = ChannelHealth(f"{kind}:{listener.label}", kind)
        self.listeners.append(listener)
        log.info(f"{kind}.listening", address=listener.label)
        return listener

    # --- sessions ---------------------------------------------------------------
    def session_started(self, session: _SessionMixin) -> None:
        self.sessions.add(session)
        self._idle.clear()

    def session_ended(self, session: _SessionMixin) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._idle.set()

    def close(self) -> None:
        """Stop accepting; idle sessions get ``421`` now, busy ones after their reply."""
        self.closing = True
        for listener in self.listeners:
            if listener.server is not None:
                listener.server.close()
        for session in list(self.sessions):
            if not session.in_transaction():
                task = asyncio.get_running_loop().create_task(session.goodbye())
                self._goodbyes.add(task)
                task.add_done_callback(self._goodbyes.discard)

    async def drain(self, deadline: float) -> int:
        """Wait up to ``deadline`` seconds for sessions to end; cut the rest.

        Returns how many sessions were cut. A session cut during DATA gets
        ``421`` (or a dropped connection), never ``250``.
        """
        if not self.closing:
            self.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), deadline)
        cut = len(self.sessions)
        for session in list(self.sessions):
            session.abort()
        if cut:
            log.warning("smtp.drain_deadline", cut_sessions=cut, deadline_s=deadline)
            # Let connection_lost run for the aborted transports.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 1.0)
        for listener in self.listeners:
            if listener.server is not None:
                await listener.server.wait_closed()
        return cut

    def shutdown(self) -> None:
        """Release the lookup threads (the pipeline pool belongs to the caller)."""
        self._lookups.shutdown(wait=False, cancel_futures=True)

    # --- work ---------------------------------------------------------------------
    def busy(self) -> bool:
        """True when ``max_pending`` messages already wait for the pipeline."""
        return self._pending >= self.limits().max_pending

    def admit(self) -> bool:
        return not self.busy()

    async def ingest(self, raw: bytes, envelope: Envelope) -> IngestResult:
        """``pipeline.ingest`` in the worker pool, counted against ``max_pending``."""
        with self._pending_lock:
            self._pending += 1
        try:
            future = self.executor.submit(self.app.pipeline.ingest, raw, envelope)
        except BaseException:
            self._release()
            raise
        # Released when the worker really finishes, not when we stop waiting:
        # a timed-out message still occupies a worker.
        future.add_done_callback(lambda _f: self._release())
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    async def lookup(self, address: str) -> RoutingAddress | None:
        """The routing address for ``address`` (the address book may query the database)."""
        loop = asyncio.get_running_loop()
        book = self.app.pipeline.addresses
        # Nearly always answered from the book's cache: a thread hop for a
        # dictionary lookup would cost more than the lookup.
        fresh, routing = book.lookup_cached(address)
        if fresh:
            return routing
        return await loop.run_in_executor(self._lookups, book.lookup, address)

    async def check_password(self, user: str, password: bytes) -> bool:
        stored = self.credentials.get(user)
        if stored is None:
            return False
        loop = asyncio.get_running_loop()
        ok: bool = await loop.run_in_executor(self._lookups, verify_password, stored, password)
        return ok

    def flush_health(self) -> None:
        """Write each listener's last success/failure to ``channel_status`` (blocking)."""
        for listener in self.listeners:
            listener.health.flush(self.app.db)

    def summary(self) -> str:
        """One line for ``systemctl status``."""
        where = ", ".join(f"{lst.kind} {lst.label}" for lst in self.listeners)
        return (
            f"{where}; {self.accepted} stored, {self.tempfailed} deferred, "
            f"{self.rejected} rejected, {len(self.sessions)} sessions"
        )
