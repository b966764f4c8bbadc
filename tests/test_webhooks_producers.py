"""Every event type has its producer, in the transaction of the change: message.sent
(the outbox's relay accepted), message.bounced (a bounce threaded onto its case),
quarantine.added, address.verified, and the events without a case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from webhook_receiver import make_secret

from emaild.addresses import add_managed, validate_routing
from emaild.intake import Envelope, Outcome
from emaild.outbox import deliver_due
from emaild.store.models import OutboxItem, WebhookDelivery, WebhookEvent
from emaild.verification.state import mark_verified
from emaild.webhooks import publish


def hook(tmp_path: Path, events: str = "") -> str:
    secret = tmp_path / "hook.secret"
    secret.write_text(make_secret())
    # Delivery is not under test here: the receiver never needs to answer.
    return (
        f'[[webhook]]\nname = "all"\nurl = "http://127.0.0.1:9/hook"\n'
        f'secret_file = "{secret}"\n{events}\n'
    )


def bodies(app: Any) -> list[dict[str, Any]]:
    with app.db.session() as s:
        return [e.body for e in s.scalars(select(WebhookEvent).order_by(WebhookEvent.id))]


def dsn(original_message_id: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>\r\n"
        "To: support@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-1@mx.customer.test>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        "Final-Recipient: rfc822; alice@customer.test\r\nAction: failed\r\n"
        "Status: 5.1.1\r\n\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@example.com\r\nTo: alice@customer.test\r\n"
        f"Message-ID: {original_message_id}\r\nSubject: Re: Hello\r\n\r\n"
        "--b--\r\n"
    ).encode()


def test_message_sent_then_bounced(make_app: Any, tmp_path: Path, relay_sink: Any) -> None:
    app = make_app(hook(tmp_path) + '[relay]\nstarttls = "off"\n', **relay_sink.relay_env)
    first = app.pipeline.ingest(
        b"From: alice@customer.test\r\nTo: support@example.com\r\nSubject: Hello\r\n"
        b"Message-ID: <hello@customer.test>\r\n\r\nHi.\r\n",
        Envelope(channel="pipe", mail_from="alice@customer.test"),
    )
    assert first.outcome is Outcome.NEW_CASE
    assert [b["type"] for b in bodies(app)] == ["case.created", "message.received"]
    report = deliver_due(app)
    assert len(report.sent) == 1
    sent = bodies(app)[-1]
    assert sent["type"] == "message.sent"
    assert sent["data"]["case"]["number"] == first.case_number
    assert sent["data"]["to"] == "alice@customer.test"
    assert sent["data"]["message"]["direction"] == "out"
    with app.db.session() as s:
        ours = s.scalars(select(OutboxItem.message_id)).one()
    bounced = app.pipeline.ingest(dsn(ours), Envelope(channel="pipe", mail_from=""))
    assert bounced.case_number == first.case_number, bounced
    kinds = [b["type"] for b in bodies(app)]
    assert kinds[-2:] == ["message.received", "message.bounced"]
    assert bodies(app)[-1]["data"]["message"]["is_bounce"] is True


def test_quarantine_added_and_address_verified(make_app: Any, tmp_path: Path) -> None:
    toml = hook(tmp_path) + (
        '[[address]]\naddress = "vip@example.com"\n'
        'accept_from = ["@partner.test"]\nreject_action = "quarantine"\n'
    )
    app = make_app(toml)
    held = app.pipeline.ingest(
        b"From: x@stranger.test\r\nTo: vip@example.com\r\nSubject: Hi\r\n"
        b"Message-ID: <q@stranger.test>\r\n\r\nHi.\r\n",
        Envelope(channel="pipe", rcpt_to=("vip@example.com",)),
    )
    assert held.outcome is Outcome.QUARANTINED
    [event] = bodies(app)
    assert event["type"] == "quarantine.added"
    assert event["data"]["quarantine"]["reason"] == "accept_from"

    now = app.pipeline.clock()
    routing = validate_routing({"address": "new@example.com"})
    app.db.run(lambda s: add_managed(s, app.config, routing, now))
    assert app.db.run(lambda s: mark_verified(s, "new@example.com", now))
    assert not app.db.run(lambda s: mark_verified(s, "new@example.com", now))  # once
    verified = [b for b in bodies(app) if b["type"] == "address.verified"]
    assert [b["data"]["address"] for b in verified] == ["new@example.com"]


def test_subscriptions_get_only_their_events_and_addresses(make_app: Any, tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text(make_secret())
    toml = (
        f'[[webhook]]\nname = "created-vip"\nurl = "http://127.0.0.1:9/a"\n'
        f'secret_file = "{secret}"\nevents = ["case.created", "channel.failing"]\n'
        'addresses = ["vip@example.com"]\n'
        f'[[webhook]]\nname = "notes"\nurl = "http://127.0.0.1:9/b"\n'
        f'secret_file = "{secret}"\nevents = ["note.added"]\n'
        '[[address]]\naddress = "support@example.com"\n[[address]]\naddress = "vip@example.com"\n'
    )
    app = make_app(toml)
    for n, to in enumerate(["support@example.com", "vip@example.com"]):
        app.pipeline.ingest(
            f"From: a@c.test\r\nTo: {to}\r\nSubject: s{n}\r\n"
            f"Message-ID: <m{n}@c.test>\r\n\r\nx\r\n".encode(),
            Envelope(channel="pipe"),
        )
    app.db.run(lambda s: publish(s, "channel.failing", {"channel": "imap:x"}, app.pipeline.clock()))
    with app.db.session() as s:
        rows = s.execute(
            select(WebhookEvent.kind, WebhookDelivery.subscription_id)
            .join(WebhookDelivery, WebhookDelivery.event_id == WebhookEvent.id)
            .order_by(WebhookDelivery.id)
        ).all()
    # only the vip case's case.created, and the channel alert (about no address)
    assert [kind for kind, _ in rows] == ["case.created", "channel.failing"]


def test_config_subscriptions_are_synced_and_win(make_app: Any, tmp_path: Path) -> None:
    from emaild.errors import ConfigError
    from emaild.store.models import WebhookSubscription

    secret = tmp_path / "s"
    secret.write_text(make_secret())

    def table(name: str, url: str) -> str:
        return f'[[webhook]]\nname = "{name}"\nurl = "{url}"\nsecret_file = "{secret}"\n'

    def rows(app: Any) -> dict[str, tuple[str, bool, str]]:
        with app.db.session() as s:
            return {
                r.name: (r.url, r.enabled, r.source) for r in s.scalars(select(WebhookSubscription))
            }

    app = make_app(table("a", "http://127.0.0.1:9/a"))
    assert rows(app) == {"a": ("http://127.0.0.1:9/a", True, "config")}
    app = make_app(table("a", "http://127.0.0.1:9/a2") + table("b", "http://127.0.0.1:9/b"))
    assert rows(app) == {
        "a": ("http://127.0.0.1:9/a2", True, "config"),
        "b": ("http://127.0.0.1:9/b", True, "config"),
    }
    app = make_app(table("b", "http://127.0.0.1:9/b"))
    assert rows(app)["a"][1] is False  # removed from the file: disabled, history kept
    from emaild.checks import run_checks

    assert run_checks(app.config)[-1].startswith("webhooks: 1 in the config file")
    secret.write_text("not a secret")
    with pytest.raises(ConfigError, match="secret too short"):
        run_checks(app.config)  # emaild check
    try:
        make_app(table("b", "http://127.0.0.1:9/b"))
    except ConfigError as exc:
        assert "webhook.0.secret_file" in str(exc)
    else:
        raise AssertionError("a bad secret file must be a config error")


def test_channel_alerts_are_published_to_webhooks(make_app: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from emaild.alerts.events import emit
    from emaild.observe.figures import read_figures

    app = make_app(hook(tmp_path, 'events = ["channel.failing", "channel.recovered"]'))
    at = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    data = {"channel": "imap:support", "kind": "imap", "error": "authentication failed"}
    app.db.run(lambda s: emit(s, "channel.failing", data, at))
    app.db.run(lambda s: emit(s, "channel.recovered", {"channel": "imap:support"}, at))
    got = bodies(app)
    assert [b["type"] for b in got] == ["channel.failing", "channel.recovered"]
    assert got[0]["data"]["channel"] == "imap:support"
    with app.db.session() as s:
        assert len(list(s.scalars(select(WebhookDelivery)))) == 2
        # The queue as /metrics shows it (emaild_webhook_deliveries and its oldest age).
        figures = read_figures(s, at)
        assert figures.webhooks == {"pending": 2, "delivered": 0, "failed": 0}
        assert figures.oldest_webhook is not None
