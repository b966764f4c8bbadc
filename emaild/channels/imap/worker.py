"""Serialised polls of one mailbox, with backoff after failures and the
mailbox's health for ``emaild status``."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import structlog

from emaild.channels.health import ChannelHealth
from emaild.channels.imap.auth import Credentials, MailboxProblem
from emaild.channels.imap.connection import ImapUnavailable
from emaild.channels.imap.poller import MailboxPoller, PollSummary, ProgressHook
from emaild.config import MailboxConfig
from emaild.errors import TransientError

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.imap")

# Log at error level (and say so in `emaild status`) from this many failed polls in a row.
ERROR_AFTER_FAILURES = 3
BACKOFF_FIRST_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 900.0


class MailboxWorker:
    """Runs the polls of one mailbox, one at a time, and keeps its health.

    ``poll()`` is safe to call from any thread: a call while a poll runs
    returns at once (with ``again=True`` it asks the running poll for one
    more pass, so mail announced by IDLE mid-pass is not left waiting).
    """

    def __init__(
        self,
        app: App,
        box: MailboxConfig,
        *,
        credentials: Credentials | None = None,
        progress: ProgressHook | None = None,
        stop: threading.Event | None = None,
        record_health: bool = True,
    ) -> None:
        self.app = app
        self.box = box
        self.poller = MailboxPoller(app, box, credentials=credentials, progress=progress, stop=stop)
        self.health = ChannelHealth(f"imap:{box.name}", "imap", persist=record_health)
        self._state = threading.Lock()
        self._busy = False
        self._pending = False
        self._failures = 0
        self._retry_at = 0.0
        self.last_error = ""

    @property
    def stop(self) -> threading.Event:
        return self.poller.stop

    def retry_in(self) -> float | None:
        """Seconds until a failing mailbox may be polled again; None when it is healthy."""
        if not self._failures:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def poll(self, *, again: bool = False, force: bool = False) -> PollSummary | None:
        """Poll until no new mail was announced meanwhile; None if skipped.

        Skipped while another poll runs, and during the backoff after failures
        (unless ``force``). Failures are recorded, logged and not raised.
        """
        with self._state:
            if self._busy:
                self._pending = self._pending or again
                return None
            if self.stop.is_set() or (not force and time.monotonic() < self._retry_at):
                return None
            self._busy = True
        total = PollSummary()
        released = False
        try:
            while not released:
                with self._state:
                    self._pending = False
                total.merge(self.poller.poll_once())
                with self._state:
                    # Decide and release under one lock, or a wake could slip between.
                    if self.stop.is_set():
                        break  # released below, after logging out
                    if not self._pending:
                        self._busy = False
                        released = True
            self._succeeded(total)
        except (ImapUnavailable, MailboxProblem, TransientError) as exc:
            self._failed(exc)
        finally:
            if self.stop.is_set():
                # Stopped (shutdown, or the mailbox is now another process's): log out.
                self.poller.close()
            if not released:
                with self._state:
                    self._busy = False
            self.health.flush(self.app.db)
        return total

    def hang_up(self) -> None:
        """Log out now if no poll runs (a running one logs out when it ends, ``stop`` set)."""
        with self._state:
            if self._busy:
                return
            self._busy = True
        try:
            self.poller.close()
        finally:
            with self._state:
                self._busy = False

    def poll_or_raise(self) -> PollSummary:
        """One pass for ``emaild poll --once``: errors are raised, health recorded."""
        try:
            summary = self.poller.poll_once()
        except (ImapUnavailable, MailboxProblem, TransientError) as exc:
            self._failed(exc)
            self.health.flush(self.app.db)
            raise
        self._succeeded(summary)
        self.health.flush(self.app.db)
        return summary

    def _succeeded(self, summary: PollSummary) -> None:
        if self._failures:
            log.info("imap.recovered", mailbox=self.box.name, after_failures=self._failures)
        self._failures = 0
        self._retry_at = 0.0
        self.last_error = ""
        self.health.success()
        if summary.fetched or summary.uidvalidity_resets:
            log.info("imap.polled", mailbox=self.box.name, **summary.as_json())

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        delay = min(BACKOFF_FIRST_SECONDS * 2 ** (self._failures - 1), BACKOFF_MAX_SECONDS)
        self._retry_at = time.monotonic() + delay
        self.last_error = str(exc)
        self.health.failure(str(exc))
        fields = {
            "mailbox": self.box.name,
            "error": str(exc),
            "failures": self._failures,
            "retry_in_seconds": round(delay, 1),
        }
        # A refused login or a broken token source will not mend itself: loud at once.
        if self._failures >= ERROR_AFTER_FAILURES or isinstance(exc, MailboxProblem):
            log.error("imap.poll_failed", **fields)
        else:
            log.warning("imap.poll_failed", **fields)
