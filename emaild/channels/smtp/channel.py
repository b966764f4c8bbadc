"""``SmtpChannel``: every SMTP/LMTP listener of the process, their limits and drain."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING

import structlog

from emaild.channels.health import ChannelHealth
from emaild.channels.smtp.anvil import Anvil, AuthThrottle
from emaild.channels.smtp.auth import security_settings, verify_password
from emaild.channels.smtp.budget import DataBudget, cost
from emaild.channels.smtp.data import SpooledMessage
from emaild.channels.smtp.peers import PeerShares, peer_label
from emaild.channels.smtp.server import Kind, Listener, SessionMixin
from emaild.config import Config, RoutingAddress, SmtpConfig
from emaild.errors import ConfigError
from emaild.pipeline import Envelope, IngestResult
from emaild.store.blobs import Spool

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.smtp")


def parse_listen(value: str, key: str = "smtp.listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into a (host, port) pair."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"expected HOST:PORT, got {value!r}", key=key)
    return host, int(port)


class SmtpChannel:
    """Every SMTP/LMTP listener of the process, sharing limits and the worker pool.

    ``executor`` runs the pipeline (the daemon's bounded pool); recipient
    lookups get two threads of their own so they never queue behind messages,
    and password hashing one more, so logins never queue before lookups.
    """

    def __init__(self, app: App, executor: Executor) -> None:
        self.app = app
        self.executor = executor
        self._lookups = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emaild-rcpt")
        self._hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emaild-auth")
        self.auth_throttle = AuthThrottle()
        self.listeners: list[Listener] = []
        self.sessions: set[SessionMixin] = set()
        self.closing = False
        self._goodbyes: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.peers = PeerShares()
        self.anvil = Anvil()
        self.data_budget = DataBudget()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.hostname = app.config.smtp.hostname or socket.getfqdn()
        self.tls, self.credentials = security_settings(app.config.smtp)
        self.accepted = 0
        self.tempfailed = 0
        self.rejected = 0
        self.refused = 0
        # Spool files a crash left behind (the daemon's are all closed now).
        stale = app.blobs.remove_stale_temp()
        if stale:
            log.warning("smtp.spool_cleaned", removed=stale)

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
        listener.label = peer_label(server.sockets[0].getsockname())
        listener.health = ChannelHealth(f"{kind}:{listener.label}", kind)
        self.listeners.append(listener)
        log.info(f"{kind}.listening", address=listener.label)
        return listener

    # --- sessions ---------------------------------------------------------------
    def session_started(self, session: SessionMixin) -> None:
        self.sessions.add(session)
        self._idle.clear()

    def session_ended(self, session: SessionMixin) -> None:
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
        self._hashing.shutdown(wait=False, cancel_futures=True)

    # --- work ---------------------------------------------------------------------
    def busy(self) -> bool:
        """True when ``max_pending`` messages already wait for the pipeline."""
        return self._pending >= self.limits().max_pending

    def admit(self) -> bool:
        return not self.busy()

    def new_spool(self) -> Spool:
        """A spool file for a DATA transfer (``TransientError`` if storage is unusable)."""
        return self.app.blobs.spool()

    async def ingest(self, message: SpooledMessage, envelope: Envelope) -> IngestResult:
        """Run the pipeline for a received message in the worker pool.

        Counted against ``max_pending``. One peer address holds at most its
        share of the workers (``limits.peer_worker_share``): its further
        messages wait here, on the event loop, holding no worker, so a peer
        sending slow mail slows only itself (issue 18 §2). Then the message
        waits for room in the memory budget (``limits.data_bytes_in_flight``,
        ``budget.py``), on disk. Time spent waiting counts against the
        caller's pipeline timeout.
        """
        with self._pending_lock:
            self._pending += 1
        host = envelope.peer.rpartition(":")[0].strip("[]") if envelope.peer else ""
        size = cost(message.size)
        try:
            if host:
                await self.peers.acquire(host, self._peer_share())
            try:
                message.waiting_for_budget = True
                await self.data_budget.acquire(size, self.config().limits.data_bytes_in_flight)
                message.admitted = True
                try:
                    future = self.executor.submit(self._process, message, envelope)
                except BaseException:
                    self.data_budget.release(size)
                    raise
                message.handed_over = True
            except BaseException:
                if host:
                    self.peers.release(host)
                raise
        except BaseException:
            self._release()
            raise
        # Released when the worker really finishes, not when we stop waiting:
        # a timed-out message still occupies a worker, its peer's share and
        # its bytes of the budget.
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _f: self._finished(loop, host, size))
        return await asyncio.wrap_future(future)

    def _process(self, message: SpooledMessage, envelope: Envelope) -> IngestResult:
        """In a worker: load the spool (the message's one copy in memory), store, run."""
        spool = message.spool
        try:
            raw = spool.load()
            if not raw or raw.isspace():
                return self.app.pipeline.ingest(raw, envelope)  # refused: nothing to keep
            # The spool becomes the raw blob: the bytes are written to disk once.
            sha = spool.publish()
            return self.app.pipeline.ingest(raw, envelope, stored_sha256=sha)
        finally:
            spool.discard()

    def _peer_share(self) -> int:
        limits = self.config().limits
        return max(1, int(limits.workers * limits.peer_worker_share))

    def _finished(self, loop: asyncio.AbstractEventLoop, host: str, size: int) -> None:
        """A worker finished a message (runs in that worker's thread)."""
        self._release()
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(self._returned, host, size)

    def _returned(self, host: str, size: int) -> None:
        """On the loop: a finished message gives back its budget and its peer's share."""
        self.data_budget.release(size)
        if host:
            self.peers.release(host)

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

    async def check_password(self, user: str, password: bytes, host: str = "") -> bool:
        """Verify a login, throttled per client address and per user (issue 18 §3).

        PBKDF2 runs in a thread of its own: a burst of logins never delays the
        recipient lookups that answer RCPT.
        """
        smtp = self.limits()
        if not self.auth_throttle.allowed(
            host, user, per_ip=smtp.auth_failures_per_ip, per_user=smtp.auth_failures_per_user
        ):
            log.warning("smtp.auth_throttled", peer=host, user=user)
            return False
        stored = self.credentials.get(user)
        ok = False
        if stored is not None:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(self._hashing, verify_password, stored, password)
        if not ok:
            self.auth_throttle.failed(host, user)
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
