"""The daemon's IMAP component: a scheduled poll per enabled mailbox plus its
IDLE watcher, run in threads of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from emaild.channels.imap.connection import describe
from emaild.channels.imap.idle import IdleWatcher
from emaild.channels.imap.worker import MailboxWorker
from emaild.component import Host

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.imap")


class ImapComponent:
    """The daemon's IMAP part: a scheduled poll per mailbox plus its IDLE watcher.

    Polls run in this component's own threads (one per mailbox), not the
    daemon's worker pool, so a long catch-up never takes workers the SMTP
    listener needs, and never runs on the event loop.
    """

    name = "imap"

    def __init__(self, app: App) -> None:
        self.app = app
        self.stop_event = threading.Event()
        boxes = [box for box in app.config.mailbox if box.enabled]
        self.workers = [MailboxWorker(app, box, stop=self.stop_event) for box in boxes]
        self.watchers: list[IdleWatcher] = []
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, len(self.workers)), thread_name_prefix="emaild-imap"
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: Host) -> None:
        """Schedule each mailbox's poll (first one now) and start the IDLE watchers."""
        self.loop = asyncio.get_running_loop()
        for worker in self.workers:
            box = worker.box
            host.scheduler.add_job(
                self._poll,
                "interval",
                args=[worker, False],
                seconds=box.poll_interval_seconds,
                id=f"imap:{box.name}",
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now(UTC),
                misfire_grace_time=None,
            )
            if box.idle:
                watcher = IdleWatcher(
                    box, worker.poller.credentials, self._waker(worker), self.stop_event
                )
                watcher.start()
                self.watchers.append(watcher)
            log.info("imap.mailbox_started", mailbox=box.name, server=describe(box), idle=box.idle)

    def _waker(self, worker: MailboxWorker) -> Callable[[], None]:
        def wake() -> None:  # runs in the watcher's thread
            loop = self.loop
            if loop is not None and not self.stop_event.is_set():
                loop.call_soon_threadsafe(self._spawn_poll, worker)

        return wake

    def _spawn_poll(self, worker: MailboxWorker) -> None:
        if self.loop is not None and not self.stop_event.is_set():
            task = self.loop.create_task(self._poll(worker, True))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _poll(self, worker: MailboxWorker, again: bool) -> None:
        if self.stop_event.is_set():
            return
        loop = asyncio.get_running_loop()
        try:
            summary = await loop.run_in_executor(self.executor, lambda: worker.poll(again=again))
        except RuntimeError:
            if not self.stop_event.is_set():  # only "executor shut down" is expected
                raise
            return
        retry = worker.retry_in()
        if summary is not None and retry is not None:
            # It failed: try again when the backoff ends, not a whole interval later.
            loop.call_later(retry + 0.01, self._spawn_poll, worker)

    async def stop(self) -> None:
        """Finish the message in hand, log out, stop the watchers."""
        self.stop_event.set()
        for watcher in self.watchers:
            watcher.interrupt()
        loop = asyncio.get_running_loop()

        def finish() -> None:
            for watcher in self.watchers:
                watcher.join(10)
            self.executor.shutdown(wait=True)
            for worker in self.workers:
                worker.poller.close()

        await loop.run_in_executor(None, finish)


def imap_component(app: App) -> ImapComponent | None:
    """The daemon's factory: a component when any mailbox is configured and enabled."""
    if not any(box.enabled for box in app.config.mailbox):
        return None
    return ImapComponent(app)
