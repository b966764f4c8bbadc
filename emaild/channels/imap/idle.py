"""IMAP IDLE: a second connection per mailbox that wakes its worker when mail
arrives, so new mail is stored at once rather than at the next interval."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from emaild.channels.imap.auth import Credentials, MailboxProblem
from emaild.channels.imap.connection import (
    ImapUnavailable,
    close_quietly,
    connect,
    failure_reason,
)
from emaild.channels.imap.worker import (
    BACKOFF_FIRST_SECONDS,
    BACKOFF_MAX_SECONDS,
    ERROR_AFTER_FAILURES,
)
from emaild.clock import utcnow
from emaild.config import MailboxConfig

log = structlog.get_logger("emaild.imap")


class IdleWatcher(threading.Thread):
    """Keeps a connection in IDLE on the mailbox's first folder and calls
    ``on_mail`` when the server announces new messages (EXISTS).

    The IDLE is re-issued every ``idle_reissue_seconds`` (servers drop it after
    30 minutes) and the connection re-established before an OAuth2 token
    lapses. Without IDLE support the thread ends: interval polling carries on.
    """

    def __init__(
        self,
        box: MailboxConfig,
        credentials: Credentials,
        on_mail: Callable[[], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"imap-idle-{box.name}", daemon=True)
        self.box = box
        self.credentials = credentials
        self.on_mail = on_mail
        self.stop_event = stop
        self.client: IMAPClient | None = None
        self.idling = threading.Event()  # set while an IDLE is in progress (tests wait on it)
        self.supported: bool | None = None
        self.idle_commands = 0  # IDLEs issued so far (re-issues included)

    def run(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            try:
                self.client = connect(self.box, self.credentials)
                if not self.client.has_capability("IDLE"):
                    self.supported = False
                    log.info("imap.idle_unsupported", mailbox=self.box.name)
                    return
                self.supported = True
                self.client.select_folder(self.box.folders[0], readonly=True)
                failures = 0
                self._idle(self.client)
            except (OSError, IMAPClientError, ImapUnavailable, MailboxProblem) as exc:
                if self.stop_event.is_set():
                    break
                failures += 1
                delay = min(BACKOFF_FIRST_SECONDS * 2 ** (failures - 1), BACKOFF_MAX_SECONDS)
                level = log.error if failures >= ERROR_AFTER_FAILURES else log.warning
                level(
                    "imap.idle_failed",
                    mailbox=self.box.name,
                    error=failure_reason(exc),
                    retry_in_seconds=delay,
                )
                self.stop_event.wait(delay)
            finally:
                self.idling.clear()
                client, self.client = self.client, None
                close_quietly(client)

    def _idle(self, client: IMAPClient) -> None:
        log.info("imap.idle_started", mailbox=self.box.name, folder=self.box.folders[0])
        fresh = True
        while not self.stop_event.is_set():
            started = time.monotonic()
            limit = self.box.idle_reissue_seconds
            deadline = self.credentials.session_deadline()
            if deadline is not None:
                to_deadline = (deadline - utcnow()).total_seconds()
                if to_deadline <= 0 and not fresh:
                    return  # log in again with a fresh token
                # A token the source does not refresh: retry each minute, not in a tight loop.
                limit = min(limit, max(to_deadline, 60.0))
            fresh = False
            client.idle()
            self.idle_commands += 1
            self.idling.set()
            try:
                while not self.stop_event.is_set():
                    left = limit - (time.monotonic() - started)
                    if left <= 0:
                        break
                    if _announces_mail(client.idle_check(timeout=min(left, 5.0))):
                        self.on_mail()
            finally:
                self.idling.clear()
            if self.stop_event.is_set():
                return
            # News that arrived while ending the IDLE comes with DONE's answer.
            if _announces_mail(client.idle_done()[1]):
                self.on_mail()

    def interrupt(self) -> None:
        """Wake the thread out of its IDLE wait (on shutdown)."""
        client = self.client
        if client is not None:
            with contextlib.suppress(OSError):
                client.socket().shutdown(socket.SHUT_RDWR)


def _announces_mail(responses: list[Any]) -> bool:
    return any(len(r) > 1 and r[1] == b"EXISTS" for r in responses)
