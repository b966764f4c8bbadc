"""Readers never wait for writers: a lookup during a write transaction answers at once.

On SQLite a plain session begins with ``BEGIN IMMEDIATE`` (it takes the write
lock). A lookup that did the same while holding a Python lock a writer
needs would deadlock until the busy timeout: the address book refreshes its
managed rows under its own lock, and a pipeline thread holding the write lock
asks the book for routing addresses. Both backends must answer at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select, update

from emaild.addresses import AddressBook
from emaild.app import App
from emaild.clock import utcnow
from emaild.store.models import Case, ManagedAddress


def test_an_address_book_refresh_does_not_wait_for_an_open_write(make_app: Any) -> None:
    app = make_app("[storage]\nbusy_timeout_seconds = 20.0\n")
    book = AddressBook(app.config, app.db, cache_seconds=0)  # every lookup re-reads
    answered: list[float] = []
    try:
        # A write transaction holding the write lock, as the pipeline's does.
        with app.db.serial_writes(), app.db.session() as session, session.begin():
            session.execute(update(Case).values(priority="High"))
            session.flush()
            started = time.monotonic()
            reader = threading.Thread(target=lambda: answered.append(len(book.entries())))
            reader.start()
            reader.join(10)
            waited = time.monotonic() - started
            assert not reader.is_alive(), "the lookup waited for the writer"
        assert answered == [1]  # the embedded default address
        assert waited < 5
    finally:
        app.close()


def test_a_readonly_session_reads_committed_rows(app: App) -> None:
    with app.db.session() as session, session.begin():
        session.add(ManagedAddress(address="help@example.com", settings={}, created_at=utcnow()))
    with app.db.session(readonly=True) as session:
        rows = list(session.scalars(select(ManagedAddress.address)))
    assert rows == ["help@example.com"]
