"""The daemon: one event loop with the listeners, a scheduler and the components.

``Daemon.serve`` binds the SMTP/LMTP listeners (or takes systemd's sockets),
starts the APScheduler ``AsyncIOScheduler`` and every component its caller
handed it, tells systemd it is ready, then waits for a signal:

- SIGTERM/SIGINT: stop accepting, let in-flight sessions finish up to
  ``daemon.shutdown_deadline_seconds``, stop components, exit 0. A second
  signal exits at once.
- SIGHUP: reload the config file (rules, templates, addresses, limits) with
  ``App.reload``; a bad file is logged and the old configuration stays.

Other parts plug in as component factories ``Callable[[App], Component |
None]`` (None = nothing to run for this config) that the caller passes
(``emaild run`` lists them). A component gets the daemon as its
``emaild.component.Host`` in ``start`` and may add scheduler jobs
(``host.scheduler``) and run blocking work with ``await host.run_sync(fn)``;
no component imports this module.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from emaild.app import App
from emaild.channels.health import monitored_channels
from emaild.channels.smtp import SmtpChannel, security_settings
from emaild.component import Component
from emaild.config import load_config
from emaild.errors import EX_OK, ConfigError, EmaildError
from emaild.systemd import InheritedSocket, Notifier

log = structlog.get_logger("emaild.daemon")

P = ParamSpec("P")
T = TypeVar("T")

# How often listener health is written to channel_status, and STATUS= refreshed.
HEALTH_INTERVAL_SECONDS = 15.0


ComponentFactory = Callable[[App], Component | None]


class Daemon:
    """Owns the event loop's contents for one ``emaild run``."""

    def __init__(
        self,
        app: App,
        *,
        config_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        components: Sequence[ComponentFactory] = (),
        notifier: Notifier | None = None,
        sockets: Sequence[InheritedSocket] = (),
    ) -> None:
        self.app = app
        self.config_path = config_path
        self.env = dict(os.environ if env is None else env)
        self.factories = tuple(components)
        self.notifier = notifier or Notifier(self.env)
        # systemd's sockets (socket activation); empty = bind the configured addresses.
        self.sockets = list(sockets)
        self.executor = ThreadPoolExecutor(
            max_workers=app.config.limits.workers, thread_name_prefix="emaild-worker"
        )
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.smtp: SmtpChannel | None = None
        self.components: list[Component] = []
        self.failed_components: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        # Set once listeners are bound (tests and the bench wait on it).
        self.ready = threading.Event()

    # --- for components ----------------------------------------------------------
    async def run_sync(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``fn`` in the daemon's bounded worker pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Start a background task that lives until shutdown (kept referenced)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def problems(self) -> list[str]:
        """Why this daemon cannot take mail now; empty when it can (``/readyz``)."""
        out = ["shutting down"] if self._stop.is_set() else []
        for listener in self.smtp.listeners if self.smtp is not None else []:
            if listener.server is None or not listener.server.is_serving():
                out.append(f"{listener.kind} listener {listener.label} is not serving")
        out += [f"component {name} failed to start" for name in self.failed_components]
        return out

    def channel_names(self) -> set[str]:
        """Health row names of the channels this daemon retries on its own: mailboxes,
        the relay, forwarding self-tests. (A listener fails per message and only a
        later message clears it: ``problems`` and the database probe cover it.)"""
        return monitored_channels(self.app.config)

    # --- lifecycle -------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; the process exit status."""
        return asyncio.run(self.serve())

    async def serve(self) -> int:
        """Start everything, wait for a stop signal, drain and stop. Returns 0."""
        self.loop = asyncio.get_running_loop()
        try:
            await self._start_listeners()
        except BaseException:
            self._close_channel()
            self.executor.shutdown(wait=True, cancel_futures=True)
            raise
        self._install_signals()
        self.scheduler.configure(event_loop=self.loop)
        self.scheduler.start()
        assert self.smtp is not None
        await self.run_sync(self.smtp.flush_health)
        await self._start_components()
        self.spawn(self._health_loop(), "health")
        if self.notifier.watchdog_seconds:
            self.spawn(self._watchdog_loop(self.notifier.watchdog_seconds), "watchdog")
        summary = self.summary()
        self.notifier.ready(summary)
        self.ready.set()
        log.info("daemon.ready", status=summary, pid=os.getpid())
        await self._stop.wait()
        await self._shutdown()
        return EX_OK

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does); safe from any thread."""
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)

    async def _start_listeners(self) -> None:
        self.smtp = SmtpChannel(self.app, self.executor)
        # "http" and "metrics" sockets are the HTTP components' (emaild run hands them over).
        mail_sockets = [s for s in self.sockets if s.name not in ("http", "metrics")]
        if mail_sockets:
            # Socket activation: systemd holds the privileged port; names come
            # from FileDescriptorName= (lmtp, else smtp).
            for inherited in mail_sockets:
                if inherited.name == "lmtp":
                    await self.smtp.listen("lmtp", inherited.label, sock=inherited.sock)
                else:
                    await self.smtp.listen("smtp", inherited.label, sock=inherited.sock)
            return
        smtp = self.app.config.smtp
        for address in smtp.listen:
            await self.smtp.listen("smtp", address)
        for address in smtp.lmtp_listen:
            await self.smtp.listen("lmtp", address)

    async def _start_components(self) -> None:
        for factory in self.factories:
            try:
                component = factory(self.app)
                if component is None:
                    continue
                await component.start(self)
            except ConfigError:
                raise
            except Exception as exc:
                # One broken component must not stop mail intake (contract 3).
                self.failed_components.append(getattr(factory, "__name__", repr(factory)))
                log.error(
                    "component.start_failed",
                    component=getattr(factory, "__name__", repr(factory)),
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
                continue
            self.components.append(component)
            log.info("component.started", component=component.name)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded in a test thread: the caller uses request_stop()
        assert self.loop is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self._on_stop_signal, signum)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_stop_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            log.warning("daemon.exit_now", signal=name)
            # The operator insists: no drain, no cleanup. Open transactions roll
            # back in the database; nothing was acknowledged that is not stored.
            os._exit(128 + signum)
        log.info("daemon.stopping", signal=name)
        self._stop.set()

    def _on_hup(self) -> None:
        self.spawn(self.reload(), "reload")

    async def reload(self) -> bool:
        """Re-read the config file and swap it in; keep the old one if it is bad."""
        self.notifier.reloading()
        try:
            config = await self.run_sync(load_config, self.config_path, self.env)
            # Check certificate and credentials first: a reload applies whole or not at all.
            security = await self.run_sync(security_settings, config.smtp)
            old = self.app.config
            await self.run_sync(self.app.reload, config)
        except EmaildError as exc:
            log.error("daemon.reload_failed", error=str(exc), kept="previous configuration")
            self.notifier.ready(f"reload failed, previous configuration kept: {exc}")
            return False
        if self.smtp is not None:
            self.smtp.tls, self.smtp.credentials = security
        if (config.smtp.listen, config.smtp.lmtp_listen) != (old.smtp.listen, old.smtp.lmtp_listen):
            log.warning("daemon.reload_listen_unchanged", reason="listen addresses need a restart")
        log.info("daemon.reloaded", source=config.source or "built-in defaults")
        self.notifier.ready(self.summary())
        return True

    async def _shutdown(self) -> None:
        deadline = self.app.config.daemon.shutdown_deadline_seconds
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self.smtp is not None:
            self.smtp.close()  # stop accepting first: STOPPING=1 means "no new sessions"
        self.notifier.stopping("draining sessions")
        if self.smtp is not None:
            cut = await self.smtp.drain(deadline)
            if cut:
                log.warning("daemon.sessions_cut", count=cut)
        remaining = max(0.0, deadline - (loop.time() - started))
        for component in reversed(self.components):
            try:
                await asyncio.wait_for(component.stop(), max(remaining, 1.0))
            except Exception as exc:
                log.error(
                    "component.stop_failed",
                    component=component.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for task in list(self._tasks):
            task.cancel()
        # Wait for pipeline work already running: it commits or rolls back whole.
        # (asyncio's default pool: the worker pool cannot wait for itself.)
        await loop.run_in_executor(None, self._finish_workers)
        self.notifier.close()
        log.info("daemon.stopped", status=self.summary())

    def _finish_workers(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.smtp is not None:
            self.smtp.flush_health()
        self._close_channel()

    def _close_channel(self) -> None:
        if self.smtp is not None:
            self.smtp.shutdown()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            try:
                if self.smtp is not None:
                    await self.run_sync(self.smtp.flush_health)
            except Exception as exc:  # health reporting must never stop the daemon
                log.error("daemon.health_flush_failed", error=f"{type(exc).__name__}: {exc}")
            self.notifier.status(self.summary())

    async def _watchdog_loop(self, interval: float) -> None:
        # Pinging from the event loop proves the loop itself is not stuck.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval / 2)

    def summary(self) -> str:
        """One line for ``systemctl status`` and the logs."""
        parts = [self.smtp.summary()] if self.smtp is not None else []
        if self.components:
            parts.append("components: " + ", ".join(c.name for c in self.components))
        return "; ".join(parts) or "idle"
