"""A catch-up downloads the next batch while it stores one (``channels.imap.fetch``).

Against a real Dovecot, on SQLite and PostgreSQL. The poller's own
connection is watched (its ``fetch`` calls are recorded, then passed on) to
see the order of downloads, storing and flagging; a failure is a real
socket shut down under the prefetch.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from dovecot import Dovecot
from test_imap import SEEN, box_for, count, flags, mail

from emaild.app import App
from emaild.channels.imap.connection import ImapUnavailable
from emaild.channels.imap.poller import MailboxPoller
from emaild.store.models import Case, Message

pytestmark = pytest.mark.dovecot


def watched(poller: MailboxPoller, before_fetch: Any = None) -> list[tuple[str, Any]]:
    """Connect ``poller`` and record each FETCH of message bodies it makes, with its thread."""
    client = poller._connected()
    events: list[tuple[str, Any]] = []
    real_fetch, real_flags = client.fetch, client.add_flags

    def fetch(uids: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        if data == ["BODY.PEEK[]"]:
            events.append(("fetch", (tuple(uids), threading.current_thread().name)))
            if before_fetch is not None:
                before_fetch(tuple(uids))
        return real_fetch(uids, data, *args, **kwargs)

    def add_flags(uids: Any, *args: Any, **kwargs: Any) -> Any:
        events.append(("flag", tuple(uids)))
        return real_flags(uids, *args, **kwargs)

    client.fetch = fetch  # type: ignore[method-assign]
    client.add_flags = add_flags  # type: ignore[method-assign]
    return events


def test_the_next_batch_downloads_while_one_is_stored(dovecot: Dovecot, app: App) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail(n) for n in range(1, 7)])
    waited: list[float] = []

    def progress(step: str, _folder: str, uid: int) -> None:
        if step != "stored" or uid != 2:
            return
        # The last message of the first batch is stored and its batch not yet
        # flagged: the second batch's download must already be under way. One
        # batch after the other would never get there: the wait runs out.
        started = time.monotonic()
        while ("fetch", ((3, 4), "imap-prefetch")) not in events:
            assert time.monotonic() - started < 10, events
            time.sleep(0.01)
        waited.append(time.monotonic() - started)

    poller = MailboxPoller(app, box_for(dovecot, user, batch_size=2), progress=progress)
    try:
        events = watched(poller)
        summary = poller.poll_once()
    finally:
        poller.close()
    assert waited, "the hook never ran"
    assert (summary.fetched, summary.cases) == (6, 6)
    downloads = [what for kind, what in events if kind == "fetch"]
    assert [uids for uids, _ in downloads] == [(1, 2), (3, 4), (5, 6)]
    assert [thread for _, thread in downloads][1:] == ["imap-prefetch"] * 2
    # Each batch is flagged once it is stored, after the next one was downloaded.
    order = [(kind, what if kind == "flag" else what[0]) for kind, what in events]
    assert order == [
        ("fetch", (1, 2)),
        ("fetch", (3, 4)),
        ("flag", (1, 2)),
        ("fetch", (5, 6)),
        ("flag", (3, 4)),
        ("flag", (5, 6)),
    ]
    assert flags(dovecot, user) == [(SEEN,)] * 6
    assert count(app, Case) == 6


def test_a_connection_lost_under_the_prefetch_loses_and_duplicates_nothing(
    dovecot: Dovecot, app: App
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [mail(n) for n in range(1, 7)])
    box = box_for(dovecot, user, batch_size=2)
    poller = MailboxPoller(app, box)

    def drop(uids: tuple[int, ...]) -> None:
        if uids == (3, 4):  # the network goes away as the second batch downloads
            assert poller.client is not None
            poller.client.socket().shutdown(socket.SHUT_RDWR)

    try:
        watched(poller, before_fetch=drop)
        with pytest.raises(ImapUnavailable):
            poller.poll_once()
    finally:
        poller.close()
    # The first batch is stored; it could not be flagged on a dead connection.
    assert count(app, Message) == 2
    assert flags(dovecot, user) == [()] * 6

    again = MailboxPoller(app, box)
    try:
        summary = again.poll_once()
    finally:
        again.close()
    assert (summary.fetched, summary.duplicates, summary.cases) == (6, 2, 4)
    assert count(app, Case) == 6
    assert count(app, Message) == 6
    assert flags(dovecot, user) == [(SEEN,)] * 6
