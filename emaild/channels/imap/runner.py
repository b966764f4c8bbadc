"""``emaild poll`` in the foreground: one mailbox, IDLE when possible, else
interval polling, until stopped; only while this process holds the mailbox
cluster-wide (``emaild.channels.imap.ownership``), as ``emaild run`` does."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from emaild.channels.imap.auth import Credentials
from emaild.channels.imap.idle import IdleWatcher
from emaild.channels.imap.ownership import CLAIM_RETRY_SECONDS, MailboxOwnership
from emaild.channels.imap.worker import MailboxWorker
from emaild.cluster import cluster_for
from emaild.config import MailboxConfig

if TYPE_CHECKING:
    from emaild.app import App


class MailboxRunner:
    """Polls one mailbox in the foreground (``emaild poll`` without ``--once``):
    IDLE when possible, else every interval, until ``stop()``. While another
    process holds the mailbox it waits, trying every ``CLAIM_RETRY_SECONDS``."""

    def __init__(
        self,
        app: App,
        box: MailboxConfig,
        *,
        credentials: Credentials | None = None,
        record_health: bool = True,
    ) -> None:
        self.app = app
        self.box = box
        self.stopping = threading.Event()
        self.wakeup = threading.Event()
        self.worker = MailboxWorker(
            app, box, credentials=credentials, stop=threading.Event(), record_health=record_health
        )
        self.owner = MailboxOwnership(cluster_for(app.db), self.worker)

    def stop(self) -> None:
        """End ``run`` soon (after the message in hand); safe from signal handlers."""
        self.stopping.set()
        self.worker.stop.set()
        self.wakeup.set()

    def run(self) -> None:
        """Poll until ``stop()``."""
        box, worker = self.box, self.worker
        watcher: IdleWatcher | None = None
        watching = threading.Event()
        next_poll = 0.0
        woken = False
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()
                self.owner.refresh()
                if self.stopping.is_set():
                    break
                if not self.owner.owned:
                    _end_watcher(watcher, watching)
                    watcher, next_poll = None, 0.0
                    self.wakeup.wait(CLAIM_RETRY_SECONDS)
                    continue
                if box.idle and watcher is None:
                    watching = threading.Event()
                    watcher = IdleWatcher(box, worker.poller.credentials, self.wakeup.set, watching)
                    watcher.start()
                if woken or time.monotonic() >= next_poll:
                    worker.poll(again=True)
                    retry = worker.retry_in()
                    # After a failure, try again when the backoff ends, not an interval later.
                    wait = box.poll_interval_seconds if retry is None else retry
                    next_poll = time.monotonic() + min(wait, box.poll_interval_seconds)
                # Wake for mail, for the next poll, or to look at the claim again.
                pause = min(CLAIM_RETRY_SECONDS, max(0.0, next_poll - time.monotonic()))
                woken = self.wakeup.wait(pause)
        finally:
            self.stopping.set()
            _end_watcher(watcher, watching)
            worker.poller.close()
            self.owner.release()
            worker.health.flush(self.app.db)


def _end_watcher(watcher: IdleWatcher | None, stop: threading.Event) -> None:
    """Stop an IDLE watcher (if any) and wait for it."""
    if watcher is not None:
        stop.set()
        watcher.interrupt()
        watcher.join(10)
