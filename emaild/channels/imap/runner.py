"""``emaild poll`` in the foreground: one mailbox, IDLE when possible, else
interval polling, until stopped."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from emaild.channels.imap.auth import Credentials
from emaild.channels.imap.idle import IdleWatcher
from emaild.channels.imap.worker import MailboxWorker
from emaild.config import MailboxConfig

if TYPE_CHECKING:
    from emaild.app import App


class MailboxRunner:
    """Polls one mailbox in the foreground (``emaild poll`` without ``--once``):
    IDLE when possible, else every interval, until ``stop()``."""

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
            app, box, credentials=credentials, stop=self.stopping, record_health=record_health
        )

    def stop(self) -> None:
        """End ``run`` soon (after the message in hand); safe from signal handlers."""
        self.stopping.set()
        self.wakeup.set()

    def run(self) -> None:
        """Poll until ``stop()``."""
        box, worker = self.box, self.worker
        watcher: IdleWatcher | None = None
        if box.idle:
            watcher = IdleWatcher(box, worker.poller.credentials, self.wakeup.set, self.stopping)
            watcher.start()
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()
                worker.poll(again=True)
                retry = worker.retry_in()
                # After a failure, try again when the backoff ends, not an interval later.
                wait = box.poll_interval_seconds
                self.wakeup.wait(wait if retry is None else min(retry, wait))
        finally:
            self.stopping.set()
            if watcher is not None:
                watcher.interrupt()
                watcher.join(10)
            worker.poller.close()
            worker.health.flush(self.app.db)
