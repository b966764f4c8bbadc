"""The HTTP API as a daemon component: uvicorn serving in the daemon's event loop.

It binds ``http.listen`` (or serves systemd's ``http`` socket), runs
``uvicorn.Server.serve`` as a task, and on shutdown stops accepting and lets
requests in flight finish within the daemon's deadline. Signals stay the
daemon's: uvicorn's own handlers would replace them. Configuration reloads
(SIGHUP) reach the routes through the ``App`` they share; the listen address
and TLS files need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from fastapi import FastAPI

from emaild.channels.smtp.channel import parse_listen
from emaild.component import Host
from emaild.errors import ConfigError
from emaild.systemd import InheritedSocket

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.http")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon owns SIGTERM/SIGHUP; it stops us through ``should_exit``.
        yield


def bind(address: str, key: str = "http.listen") -> socket.socket:
    host, port = parse_listen(address, key)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=256)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror}", key=key) from None
    return sock


class HttpComponent:
    """Serves ``emaild.http.app.create_app`` on one socket."""

    name = "http"

    def __init__(
        self, app: App, address: str, sock: socket.socket | None = None, *, ops_only: bool = False
    ) -> None:
        self.app = app
        self.address = address
        # Only /metrics, /healthz and /readyz ([metrics] listen).
        self.ops_only = ops_only
        if ops_only:
            self.name = "metrics"
        self.server: _Server | None = None
        self.api: FastAPI | None = None
        self.task: asyncio.Task[Any] | None = None
        # systemd's socket (FileDescriptorName=http), else bound in ``start``.
        self.sock: socket.socket | None = sock

    @property
    def port(self) -> int:
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    async def start(self, host: Host) -> None:
        from emaild.http.app import create_app, create_ops_app

        if self.sock is None:
            self.sock = bind(self.address, "metrics.listen" if self.ops_only else "http.listen")
        # uvicorn writes a response's head and body separately: without NODELAY
        # (accepted sockets inherit it from this one) Nagle holds the body back
        # until the client's delayed ACK, 40 ms on every request.
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        http = self.app.config.http
        self.api = (create_ops_app if self.ops_only else create_app)(self.app, host.run_sync, host)
        config = uvicorn.Config(
            self.api,
            lifespan="off",
            http="h11",
            log_config=None,
            access_log=False,
            server_header=False,
            # The peer is the client: X-Forwarded-For from a local proxy does not
            # rewrite it ([metrics] allow_from, the form's rate limit and origin;
            # the forms read [web] trusted_proxies themselves).
            proxy_headers=False,
            timeout_keep_alive=5,
            limit_concurrency=256,
            timeout_graceful_shutdown=int(self.app.config.daemon.shutdown_deadline_seconds) or 1,
            ssl_certfile=http.tls_cert or None,
            ssl_keyfile=http.tls_key or None,
        )
        self.server = _Server(config)
        self.task = host.spawn(self.server.serve(sockets=[self.sock]), "http")
        # Started (or failed) before the daemon reports ready.
        while not self.server.started and not self.task.done():
            await asyncio.sleep(0.01)
        if self.task.done():
            self.task.result()
        log.info(f"{self.name}.listening", address=self.label, tls=bool(http.tls_cert))

    @property
    def label(self) -> str:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (uvicorn's graceful shutdown)."""
        if self.server is None or self.task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.api is not None:
            self.api.state.emaild.ops.readiness.close()


def http_component(app: App, inherited: Sequence[InheritedSocket] = ()) -> HttpComponent | None:
    """``emaild run`` factory: the API runs on systemd's ``http`` socket, else on
    ``http.listen``; None when neither is there."""
    for candidate in inherited:
        if candidate.name == "http":
            return HttpComponent(app, candidate.label, candidate.sock)
    if not app.config.http.listen:
        return None
    return HttpComponent(app, app.config.http.listen)


def metrics_component(app: App, inherited: Sequence[InheritedSocket] = ()) -> HttpComponent | None:
    """``emaild run`` factory: the operations endpoints on ``[metrics] listen`` (or on
    the ``metrics`` socket a supervisor or systemd passed)."""
    for candidate in inherited:
        if candidate.name == "metrics":
            return HttpComponent(app, candidate.label, candidate.sock, ops_only=True)
    if not app.config.metrics.listen:
        return None
    return HttpComponent(app, app.config.metrics.listen, ops_only=True)
