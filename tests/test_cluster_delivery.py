"""Outbox and webhook deliveries with three ``emaild run`` processes claiming from one
PostgreSQL: each outbox item reaches the relay once, each webhook delivery the
receiver once.

The outbox claims with a compare-and-set UPDATE (``emaild.outbox.queue.claim``),
the webhooks with ``FOR UPDATE SKIP LOCKED`` (``emaild.webhooks.queue.claim_due``).
A backlog is waiting when the three start (all of them claim from it at once),
and more mail comes in through each one's SMTP listener while they run.
"""

from __future__ import annotations

import smtplib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import pg_environment, start_all
from smtp_helpers import DaemonProcess
from sqlalchemy import func, select
from webhook_receiver import hook_toml, receiver

from emaild.app import App
from emaild.clock import utcnow
from emaild.config import load_config
from emaild.outbox import enqueue
from emaild.pipeline import Envelope
from emaild.store.models import OutboxItem, WebhookDelivery

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROCESSES = 3
BACKLOG_OUTBOX = 90
BACKLOG_MAIL = 30
LIVE_MAIL = 30


def mail(n: int) -> bytes:
    return (
        f"From: Customer {n} <d{n}@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: Delivery {n}\r\nMessage-ID: <delivery-{n}@customer.test>\r\n\r\nHi {n}.\r\n"
    ).encode()


def notice(n: int) -> bytes:
    return (
        f"From: support@example.com\r\nTo: r{n}@customer.test\r\nSubject: Notice {n}\r\n"
        f"Message-ID: <notice-{n}@example.com>\r\n\r\nNotice {n}.\r\n"
    ).encode()


def totals(app: App) -> tuple[dict[str, int], dict[str, int]]:
    """Outbox items and webhook deliveries by status."""
    with app.db.session() as session:
        outbox = dict(
            session.execute(
                select(OutboxItem.status, func.count()).group_by(OutboxItem.status)
            ).all()
        )
        hooks = dict(
            session.execute(
                select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
            ).all()
        )
    return {str(k): int(v) for k, v in outbox.items()}, {str(k): int(v) for k, v in hooks.items()}


def test_outbox_and_webhook_items_are_each_sent_once_with_three_processes_claiming(
    postgres: Any, relay_sink: Any, tmp_path: Path, record_property: Any
) -> None:
    with receiver() as hooks, pg_environment(postgres, tmp_path) as env:
        config = tmp_path / "emaild.toml"
        config.write_text(
            hook_toml(hooks.url, hooks.secret_file(tmp_path))
            + "\n[relay]\nflush_interval_seconds = 0.2\n",
            encoding="utf-8",
        )
        env.update(relay_sink.relay_env, EMAILD_CONFIG=str(config))
        app = App.open(load_config(config, env))
        try:
            # The backlog all three find at start: notices and the mail's own
            # auto-responses in the outbox, its case events for the webhook.
            def queue(session: Any) -> None:
                for n in range(BACKLOG_OUTBOX):
                    enqueue(
                        session,
                        notice(n),
                        mail_from="",
                        rcpt_to=f"r{n}@customer.test",
                        now=utcnow(),
                        kind="notice",
                    )

            app.db.run(queue)
            for n in range(BACKLOG_MAIL):
                app.pipeline.ingest(mail(n), Envelope(channel="pipe"))

            daemons = [DaemonProcess(env, tmp_path) for _ in range(PROCESSES)]
            try:
                start_all(daemons)
                for n in range(BACKLOG_MAIL, BACKLOG_MAIL + LIVE_MAIL):
                    port = daemons[n % PROCESSES].smtp_port
                    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                        client.sendmail(f"d{n}@customer.test", ["support@example.com"], mail(n))

                deadline = time.monotonic() + 60
                while True:
                    outbox, deliveries = totals(app)
                    if set(outbox) <= {"sent"} and set(deliveries) <= {"delivered"}:
                        break
                    assert time.monotonic() < deadline, (outbox, deliveries)
                    time.sleep(0.2)
                time.sleep(1.0)  # anything sent twice would have arrived by now
                outbox, deliveries = totals(app)
                split = [sum(int(e["sent"]) for e in d.events("outbox.run")) for d in daemons]
            finally:
                for daemon in daemons:
                    daemon.stop()
        finally:
            app.close()

        sent, delivered = outbox["sent"], deliveries["delivered"]
        assert sent >= BACKLOG_OUTBOX + BACKLOG_MAIL + LIVE_MAIL  # notices + auto-responses
        assert delivered >= BACKLOG_MAIL + LIVE_MAIL  # at least one event per case

        relayed = Counter(m.message()["Message-ID"] for m in relay_sink.received())
        assert len(relayed) == sent and max(relayed.values()) == 1, relayed.most_common(3)
        posted = Counter(r.id for r in hooks.delivered())
        assert len(posted) == delivered and max(posted.values()) == 1, posted.most_common(3)

        record_property("outbox_sent_per_process", split)
        print(f"outbox: {sent} sent once each, by process: {split}; webhooks: {delivered} once")
        assert sum(split) == sent
        assert sum(1 for n in split if n) >= 2, "only one process sent: no contention shown"
