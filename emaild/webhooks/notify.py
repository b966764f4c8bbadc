"""Wake the delivery component when deliveries are committed in this process.

``outbox.write`` marks its session (``mark``); when that session's transaction
commits, every listener is called (from the committing thread). The daemon's
``WebhookComponent`` listens, so an event goes out the moment its change is
durable instead of at the next poll; the poll remains for retries that come
due and for events committed by other processes. A mark left by a unit rolled
back to its savepoint (group commit) only causes one look that finds nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_KEY = "emaild.webhooks.written"
_lock = threading.Lock()
_listeners: list[Callable[[], None]] = []


def mark(session: Session) -> None:
    """Deliveries were written in ``session``'s transaction."""
    session.info[_KEY] = True


def subscribe(listener: Callable[[], None]) -> None:
    """Call ``listener`` (from any thread; it must not block) after such a commit."""
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: Callable[[], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a SAVEPOINT released (group commit): the transaction is still open
    if not session.info.pop(_KEY, False):
        return
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener()


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without a commit (after_commit pops first):
    # a rollback, nothing of it is stored.
    if transaction.parent is None:
        session.info.pop(_KEY, None)
