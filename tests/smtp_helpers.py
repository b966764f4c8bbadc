"""Run the real emaild SMTP/LMTP listener for an ``App`` inside a test.

    from smtp_helpers import smtp_listener

    def test_something(app):
        with smtp_listener(app) as (host, port):
            with smtplib.SMTP(host, port) as client:
                client.sendmail("a@b.test", ["support@example.com"], raw)

The listener runs on its own event loop in a background thread, bound to an
ephemeral loopback port, with the same ``SmtpChannel`` the daemon uses (limits,
RCPT checks, pipeline through a bounded worker pool). Channel health is
flushed to ``channel_status`` when the block ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Literal

from emaild.app import App
from emaild.channels.smtp import SmtpChannel


class RunningListener:
    """A listener on a background loop; ``address`` is (host, port)."""

    def __init__(self, app: App, kind: Literal["smtp", "lmtp"]) -> None:
        self.app = app
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(
            max_workers=app.config.limits.workers, thread_name_prefix="test-worker"
        )
        self.channel: SmtpChannel | None = None
        self.address: tuple[str, int] = ("", 0)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"test-{kind}", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.channel = SmtpChannel(self.app, self.executor)
        listener = await self.channel.listen(self.kind, "127.0.0.1:0")
        self.address = listener.address

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("listener did not start")
        if self._error is not None:
            self._thread.join(10)
            self.executor.shutdown(wait=True)
            if self.channel is not None:
                self.channel.shutdown()
            self.loop.close()
            raise self._error

    def stop(self, deadline: float = 5.0) -> None:
        """Drain like the daemon does on SIGTERM, then flush channel health."""
        if self.channel is not None:
            channel = self.channel
            future = asyncio.run_coroutine_threadsafe(channel.drain(deadline), self.loop)
            future.result(deadline + 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.executor.shutdown(wait=True)
        if self.channel is not None:
            self.channel.flush_health()
            self.channel.shutdown()
        self.loop.close()


@contextmanager
def smtp_listener(app: App, *, lmtp: bool = False) -> Iterator[tuple[str, int]]:
    """Serve SMTP (or LMTP with ``lmtp=True``) for ``app``; yields (host, port)."""
    running = RunningListener(app, "lmtp" if lmtp else "smtp")
    running.start()
    try:
        yield running.address
    finally:
        running.stop()


@contextmanager
def running_listener(app: App, *, lmtp: bool = False) -> Iterator[RunningListener]:
    """Like ``smtp_listener`` but yields the ``RunningListener`` (channel, counters)."""
    running = RunningListener(app, "lmtp" if lmtp else "smtp")
    running.start()
    try:
        yield running
    finally:
        running.stop()
