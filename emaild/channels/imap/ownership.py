"""Which process works a mailbox: the cluster-wide lock ``imap:NAME``.

Every ``emaild run`` (and ``emaild poll``) configured with a mailbox competes
for its lock (``emaild.cluster``); the holder polls and IDLEs it, the others
try again every ``CLAIM_RETRY_SECONDS``. When the holder dies its lock is
freed at once (it was bound to its database session), so another process
takes the mailbox over at its next try: within ``CLAIM_RETRY_SECONDS`` plus
one poll, well inside 30 s.

A holder that loses its lock (its lock connection broke) has the worker's
``stop`` event set by the lock's heartbeat: the poll in progress ends after
the message in hand and logs out. The seconds that can take are safe: each
message's cursor move rides in its own transaction and the pipeline's
duplicate suppression answers a message fetched twice, so an overlap costs a
second download, never a second case (``emaild.channels.imap.cursor``).
"""

from __future__ import annotations

import structlog

from emaild.channels.imap.worker import MailboxWorker
from emaild.cluster import Cluster
from emaild.errors import TransientError

log = structlog.get_logger("emaild.imap")

# How often a process that does not hold a mailbox tries to take it.
CLAIM_RETRY_SECONDS = 5.0

GAINED, LOST, KEPT, WAITING = "gained", "lost", "kept", "waiting"


def lock_name(mailbox: str) -> str:
    """The cluster-wide lock of mailbox ``mailbox`` (as ``emaild status`` lists it)."""
    return f"imap:{mailbox}"


class MailboxOwnership:
    """This process's hold on one mailbox; ``refresh()`` every ``CLAIM_RETRY_SECONDS``.

    While not held the worker's ``stop`` event stays set, so nothing polls.
    """

    def __init__(self, cluster: Cluster, worker: MailboxWorker) -> None:
        self.cluster = cluster
        self.worker = worker
        self.name = lock_name(worker.box.name)
        self.owned = False
        worker.stop.set()

    def refresh(self) -> str:
        """Take the mailbox if free, notice if it was lost; returns what changed (blocking)."""
        if self.owned:
            if self.cluster.holds(self.name):
                return KEPT
            self._stop_working()
            return LOST
        try:
            got = self.cluster.try_acquire(self.name, lost=self.worker.stop)
        except TransientError as exc:
            log.warning("imap.claim_failed", mailbox=self.worker.box.name, error=str(exc))
            return WAITING
        if not got:
            return WAITING
        self.owned = True
        self.worker.stop.clear()
        log.info("imap.mailbox_owned", mailbox=self.worker.box.name, holder=self.cluster.identity)
        return GAINED

    def release(self) -> None:
        """Stop working the mailbox and let another process have it (shutdown)."""
        self.worker.stop.set()
        if self.owned:
            self.owned = False
            self.cluster.release(self.name)

    def _stop_working(self) -> None:
        self.owned = False
        self.worker.stop.set()
        self.worker.hang_up()
        log.warning("imap.mailbox_lost", mailbox=self.worker.box.name)
