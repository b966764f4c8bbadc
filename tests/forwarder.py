"""The mail provider in a test: takes what the relay sink received and forwards it.

``Forwarder(sink, deliver)`` watches a ``RelaySink`` in a background thread and
hands every message it receives to ``deliver(mail)`` once: re-injected into
emaild's SMTP listener (``smtp_to``), or appended to an IMAP mailbox. Stopping
it (or never starting it) is a provider that swallows the mail.
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Callable
from typing import Any

Deliver = Callable[[Any], None]


def smtp_to(host: str, port: int) -> Deliver:
    """Deliver to an SMTP server with the envelope the relay saw (a forwarding MTA)."""

    def deliver(mail: Any) -> None:
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.sendmail(mail.mail_from, list(mail.rcpt_tos), mail.data)

    return deliver


class Forwarder:
    """Forwards each message the sink receives, in order, exactly once."""

    def __init__(self, sink: Any, deliver: Deliver) -> None:
        self.sink = sink
        self.deliver = deliver
        self.forwarded = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)

    def __enter__(self) -> Forwarder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.errors:
            raise AssertionError(f"forwarding failed: {self.errors[0]!r}") from self.errors[0]

    def _run(self) -> None:
        while not self._stop.is_set():
            pending = self.sink.received()[self.forwarded :]
            for mail in pending:
                try:
                    self.deliver(mail)
                except BaseException as exc:
                    self.errors.append(exc)
                    return
                self.forwarded += 1
            self._stop.wait(0.05)
