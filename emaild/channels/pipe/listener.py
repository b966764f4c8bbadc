"""The daemon's side of ``emaild ingest``'s hand-off: ``STATE_DIR/ingest.sock``.

A component of ``emaild run`` (``[daemon] ingest_socket``, on by default). Each
connection carries one message (the protocol is in ``handoff``); it runs
through ``answer.ingest_pipe`` in the daemon's worker pool and the answer goes
back once the outcome is committed. Bodies are read only while one of
``limits.workers`` slots is free, so waiting clients hold no memory here.

One process per state directory serves the socket: it holds an ``flock`` on
``ingest.sock.lock`` while it does, so another ``emaild run`` (or worker) on the
same state directory leaves the socket alone, and a socket left by a process
that died is replaced. The socket is ``0660``: the pipe's user must share the
daemon's user or group; otherwise ``emaild ingest`` runs the pipeline itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import stat
from typing import TYPE_CHECKING, Any

import structlog

from emaild.channels.pipe.answer import PipeAnswer, ingest_pipe
from emaild.component import Host
from emaild.errors import EX_DATAERR, EX_TEMPFAIL, ConfigError, too_large
from emaild.paths import INGEST_SOCKET

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.pipe")

MAX_HEADER_BYTES = 4096


class HandoffListener:
    """Serves ``ingest.sock`` while this process holds its lock."""

    name = "ingest-socket"

    def __init__(self, app: App) -> None:
        self.app = app
        self.path = app.config.state_dir / INGEST_SOCKET
        self.server: asyncio.AbstractServer | None = None
        self.host: Host | None = None
        self.slots = asyncio.Semaphore(max(1, app.config.limits.workers))
        self.connections: set[asyncio.Task[Any]] = set()
        self._lock_fd: int | None = None

    async def start(self, host: Host) -> None:
        self.host = host
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.info("ingest_socket.served_elsewhere", path=str(self.path))
            return
        self._lock_fd = fd
        # A socket left by a process that died is replaced by the rename below
        # (we hold the lock: nobody serves it); anything else there is an error.
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise ConfigError(
                    f"{self.path} exists and is not a socket", key="daemon.ingest_socket"
                )
        # Bound under a temporary name, made 0660, then moved into place: the
        # socket is never reachable with wider permissions.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = f"{self.path}.{os.getpid()}"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            sock.bind(temporary)
            os.chmod(temporary, 0o660)
            os.rename(temporary, self.path)
            self.server = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=MAX_HEADER_BYTES
            )
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        log.info("ingest_socket.listening", path=str(self.path))

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        timeout = self.app.config.smtp.timeout_seconds
        try:
            header = json.loads(await asyncio.wait_for(reader.readline(), timeout))
            to, mail_from, size = _header(header)
            limit = self.app.config.limits.max_message_bytes
            if size > limit:
                # Read it all first: a client still sending would not see the answer.
                await asyncio.wait_for(_discard(reader, size), timeout)
                answer = PipeAnswer(
                    EX_DATAERR, "", f"emaild: unusable input: {too_large(size, limit)}"
                )
            else:
                async with self.slots:
                    raw = await asyncio.wait_for(reader.readexactly(size), timeout)
                    answer = await self._ingest(raw, to, mail_from)
            writer.write(json.dumps(answer.as_json()).encode() + b"\n")
            await writer.drain()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            # No answer: the client tells its MTA to try again.
            log.warning("ingest_socket.client_error", error=f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()

    async def _ingest(self, raw: bytes, to: str, mail_from: str) -> PipeAnswer:
        assert self.host is not None
        try:
            return await self.host.run_sync(
                ingest_pipe, self.app.pipeline, raw, to=to, mail_from=mail_from
            )
        except Exception as exc:  # the database or the disk: local and fixable
            log.error("ingest_socket.ingest_failed", error=f"{type(exc).__name__}: {exc}")
            return PipeAnswer(
                EX_TEMPFAIL,
                "",
                f"emaild: temporary failure, try again: {type(exc).__name__}: {exc}",
            )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            await self.server.wait_closed()
        if self.connections:  # messages in the pipeline commit and get their answer
            await asyncio.wait(list(self.connections))
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


async def _discard(reader: asyncio.StreamReader, size: int) -> None:
    while size > 0:
        chunk = await reader.read(min(size, 1 << 16))
        if not chunk:
            return
        size -= len(chunk)


def _header(data: Any) -> tuple[str, str, int]:
    if not isinstance(data, dict):
        raise ValueError("header is not an object")
    to, mail_from, size = data.get("to", ""), data.get("from", ""), data.get("size")
    if not isinstance(to, str) or not isinstance(mail_from, str):
        raise ValueError("to and from must be strings")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("size must be a non-negative integer")
    return to, mail_from, size


def handoff_component(app: App) -> HandoffListener | None:
    """``emaild run`` factory: the socket unless ``[daemon] ingest_socket = false``."""
    return HandoffListener(app) if app.config.daemon.ingest_socket else None
