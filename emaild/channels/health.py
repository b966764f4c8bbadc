"""Channel health: last success and failure of each channel, for ``emaild status``.

A channel records outcomes in memory (cheap, on every message) and the daemon
flushes them to the ``channel_status`` table now and then. Writing a row per
message would double the database work of the hot path; and a failure caused
by the database being down could not be written at that moment anyway, so it
stays pending until a later flush succeeds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emaild.config import Config
from emaild.errors import TransientError
from emaild.store.database import Database
from emaild.store.models import ChannelStatus

# The outbox's relay, as one channel (emaild.outbox.component records it).
RELAY_CHANNEL = "relay"


def monitored_channels(config: Config) -> set[str]:
    """The health rows of channels the config asks the daemon to run, besides its
    SMTP/LMTP listeners (named by their bound address): mailboxes, the relay and
    the scheduled forwarding self-tests (``emaild.alerts.selftest``)."""
    names = {f"imap:{box.name}" for box in config.mailbox if box.enabled}
    names |= {f"fwdtest:{test.address}" for test in config.forwarding_test}
    names.add(RELAY_CHANNEL)
    return names


@dataclass
class _Snapshot:
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str
    consecutive_failures: int
    failing_since: datetime | None


class ChannelHealth:
    """Outcomes of one channel (``name`` like ``smtp:127.0.0.1:2525``), thread-safe."""

    def __init__(self, name: str, kind: str, *, persist: bool = True) -> None:
        self.name = name
        self.kind = kind
        # False for a one-off channel (`emaild poll URL`): `status` shows what is
        # configured; a row written once would stay there for ever.
        self.persist = persist
        self._lock = threading.Lock()
        self._last_success: datetime | None = None
        self._last_failure: datetime | None = None
        self._last_error = ""
        self._failures = 0
        self._failing_since: datetime | None = None
        self._dirty = True  # write the row once at start, so the channel shows up

    def success(self, when: datetime | None = None) -> None:
        """A message was handled (stored, or answered as the protocol requires)."""
        with self._lock:
            self._last_success = when or datetime.now(UTC)
            self._failures = 0
            self._failing_since = None
            self._dirty = True

    def failure(self, error: str, when: datetime | None = None) -> None:
        """The channel could not do its job (storage down, timeout, bug)."""
        with self._lock:
            self._last_failure = when or datetime.now(UTC)
            self._last_error = error[:2000]
            self._failures += 1
            if self._failing_since is None:
                self._failing_since = self._last_failure
            self._dirty = True

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def flush(self, db: Database) -> bool:
        """Write pending changes; False (and still pending) if the database is down."""
        with self._lock:
            if not self._dirty or not self.persist:
                return True
            snap = _Snapshot(
                self._last_success,
                self._last_failure,
                self._last_error,
                self._failures,
                self._failing_since,
            )
            self._dirty = False
        try:
            try:
                db.run(lambda session: _upsert(session, self.name, self.kind, snap))
            except IntegrityError:
                # Another process (a worker of the same supervisor) inserted the row
                # at the same moment: now it exists, update it.
                db.run(lambda session: _upsert(session, self.name, self.kind, snap))
        except TransientError:
            with self._lock:
                self._dirty = True
            return False
        return True


def _upsert(session: Session, name: str, kind: str, snap: _Snapshot) -> None:
    # Locked: workers sharing a listener share its row (read, compare, write).
    row = session.get(ChannelStatus, name, with_for_update=True)
    if row is None:
        row = ChannelStatus(name=name, kind=kind)
        session.add(row)
    row.kind = kind
    # Never move a timestamp backwards: another process may share the row name.
    if snap.last_success_at and (
        row.last_success_at is None or snap.last_success_at > row.last_success_at
    ):
        row.last_success_at = snap.last_success_at
    if snap.last_failure_at and (
        row.last_failure_at is None or snap.last_failure_at > row.last_failure_at
    ):
        row.last_failure_at = snap.last_failure_at
        row.last_error = snap.last_error
    # A streak that began before this process (a restart while failing) keeps its
    # start: the alert threshold (emaild.alerts) counts from the first failure.
    carried = (
        snap.failing_since is not None
        and row.failing_since is not None
        and row.consecutive_failures > 0
        and row.failing_since < snap.failing_since
        and (snap.last_success_at is None or snap.last_success_at < row.failing_since)
    )
    if not carried:
        row.failing_since = snap.failing_since
    row.consecutive_failures = snap.consecutive_failures
