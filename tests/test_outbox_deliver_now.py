"""``deliver_now``: what the relay did with one item, even when another deliverer took it.

``emaild address verify`` and the forwarding self-test queue a message and
report the relay's answer at once. In a daemon the outbox component is woken
by the same commit and may claim the item first; the report must then be that
attempt's outcome, not the item as it was before it ("queued, 0 attempts").
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select

from emaild.app import App
from emaild.outbox import deliver_due, enqueue
from emaild.store.models import OutboxItem
from emaild.verification.admin import deliver_now


def queue_one(app: App) -> int:
    msg = EmailMessage()
    msg["From"] = "support@example.com"
    msg["To"] = "support@example.com"
    msg["Subject"] = "forwarding test"
    msg["Message-ID"] = "<deliver-now@example.com>"
    msg.set_content("Test.\n")

    def work(s: Any) -> int:
        item = enqueue(
            s,
            msg,
            mail_from="support@example.com",
            rcpt_to="support@example.com",
            now=datetime.now(UTC),
            kind="fwdtest",
        )
        s.flush()
        return int(item.id)

    return app.db.run(work)  # type: ignore[no-any-return]


def claimed_by(app: App, item_id: int) -> str:
    with app.db.session() as s:
        return str(s.scalar(select(OutboxItem.claimed_by).where(OutboxItem.id == item_id)))


def test_an_attempt_under_way_elsewhere_is_waited_for_and_reported(
    make_app: Any, relay_sink: Any
) -> None:
    app = make_app('[relay]\nstarttls = "off"\n', **relay_sink.relay_env)
    item_id = queue_one(app)
    relay_sink.data_delay = 1.0  # the other deliverer's attempt lasts a second
    other = threading.Thread(target=deliver_due, args=(app,))
    other.start()
    try:
        deadline = time.monotonic() + 10
        while not claimed_by(app, item_id):
            assert time.monotonic() < deadline, "the other deliverer never claimed the item"
            time.sleep(0.01)
        delivery = deliver_now(app, item_id)  # finds the item claimed: skips, then waits
    finally:
        other.join(30)
    assert (delivery.status, delivery.attempts, delivery.error) == ("sent", 1, "")
    assert len(relay_sink.received()) == 1  # one attempt in all: the other deliverer's


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_nothing_in_flight_reports_at_once(make_app: Any, relay_sink: Any) -> None:
    app = make_app('[relay]\nstarttls = "off"\n', **relay_sink.relay_env)
    relay_sink.mode = "tempfail"
    item_id = queue_one(app)
    started = time.monotonic()
    delivery = deliver_now(app, item_id)
    assert (delivery.status, delivery.attempts) == ("queued", 1)
    assert "try again later" in delivery.error
    assert time.monotonic() - started < 5  # no waiting on a claim nobody holds
