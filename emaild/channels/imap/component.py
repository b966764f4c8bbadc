"""The daemon's IMAP component: a scheduled poll per enabled mailbox plus its
IDLE watcher, run in threads of its own, for the mailboxes this process holds
cluster-wide (``emaild.channels.imap.ownership``)."""

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
from emaild.channels.imap.ownership import CLAIM_RETRY_SECONDS, GAINED, LOST, MailboxOwnership
from emaild.channels.imap.worker import MailboxWorker
from emaild.cluster import cluster_for
from emaild.component import Host

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.imap")


class ImapComponent:
    """The daemon's IMAP part: a scheduled poll per mailbox plus its IDLE watcher.

    Polls run in this component's own threads (one per mailbox), not the
    daemon's worker pool, so a long catch-up never takes workers the SMTP
    listener needs, and never runs on the event loop. A mailbox is polled
    and IDLEd only while this process holds its cluster-wide lock: the
    ``imap:claims`` job takes free mailboxes (first poll at once, IDLE
    started) and lets go of lost ones every ``CLAIM_RETRY_SECONDS``.
    """

    name = "imap"

    def __init__(self, app: App) -> None:
        self.app = app
        self.stop_event = threading.Event()
        boxes = [box for box in app.config.mailbox if box.enabled]
        # Each worker's own stop event: set while another process holds its mailbox.
        self.workers = [MailboxWorker(app, box, stop=threading.Event()) for box in boxes]
        cluster = cluster_for(app.db)
        self.owners = {id(w): MailboxOwnership(cluster, w) for w in self.workers}
        self.watchers: dict[int, tuple[IdleWatcher, threading.Event]] = {}
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, len(self.workers)) + 1, thread_name_prefix="emaild-imap"
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: Host) -> None:
        """Schedule each mailbox's poll and the claims job (first one now)."""
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
                misfire_grace_time=None,
            )
            log.info("imap.mailbox_started", mailbox=box.name, server=describe(box), idle=box.idle)
        host.scheduler.add_job(
            self._claims,
            "interval",
            seconds=CLAIM_RETRY_SECONDS,
            id="imap:claims",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )

    async def _claims(self) -> None:
        """Take the free mailboxes, give up the lost ones (see ``MailboxOwnership``)."""
        if self.stop_event.is_set():
            return
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            owner = self.owners[id(worker)]
            try:
                change = await loop.run_in_executor(self.executor, owner.refresh)
            except RuntimeError:  # the executor is shut down: stopping
                return
            if change == GAINED:
                if self.stop_event.is_set():
                    owner.release()
                    return
                self._start_watcher(worker)
                self._spawn_poll(worker)
            elif change == LOST:
                self._stop_watcher(worker)

    def _start_watcher(self, worker: MailboxWorker) -> None:
        if not worker.box.idle:
            return
        stop = threading.Event()
        watcher = IdleWatcher(worker.box, worker.poller.credentials, self._waker(worker), stop)
        watcher.start()
        self.watchers[id(worker)] = (watcher, stop)

    def _stop_watcher(self, worker: MailboxWorker) -> IdleWatcher | None:
        found = self.watchers.pop(id(worker), None)
        if found is None:
            return None
        watcher, stop = found
        stop.set()
        watcher.interrupt()
        return watcher

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
        if self.stop_event.is_set() or worker.stop.is_set():  # stopping, or not ours
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
        """Finish the message in hand, log out, stop the watchers, let the mailboxes go."""
        self.stop_event.set()
        for worker in self.workers:
            worker.stop.set()
        watchers = [w for w in (self._stop_watcher(worker) for worker in self.workers) if w]
        loop = asyncio.get_running_loop()

        def finish() -> None:
            for watcher in watchers:
                watcher.join(10)
            self.executor.shutdown(wait=True)
            for worker in self.workers:
                worker.poller.close()
                # Only now: another process may take the mailbox at once.
                self.owners[id(worker)].release()

        await loop.run_in_executor(None, finish)


def imap_component(app: App) -> ImapComponent | None:
    """The daemon's factory: a component when any mailbox is configured and enabled."""
    if not any(box.enabled for box in app.config.mailbox):
        return None
    return ImapComponent(app)
