"""Auto-responses to non-ASCII addresses (RFC 6531/6532): SMTPUTF8 where the relay
offers it, an IDN domain in its ASCII form, and a recorded reason otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mailbuilder import build_mail
from sqlalchemy import select

from emaild.app import App
from emaild.outbox import deliver_due
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import OutboxItem, SuppressedRecipient


@pytest.fixture
def open_app(make_config: Any) -> Iterator[Any]:
    apps: list[App] = []

    def build(sink: Any) -> App:
        app = App.open(make_config('[relay]\nstarttls = "off"\n', **sink.relay_env))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.close()


def customer_mail(address: str) -> bytes:
    raw = build_mail(sender=f"Jörg <{address}>", message_id="<utf8@kunde.test>")
    return raw.replace(b"From: ", b"MIME-Version: 1.0\r\nFrom: ", 1)


def outbox(app: App) -> list[OutboxItem]:
    with app.db.session() as s:
        return list(s.scalars(select(OutboxItem)))


def test_non_ascii_local_part_goes_out_with_smtputf8(open_app: Any, make_relay_sink: Any) -> None:
    sink = make_relay_sink(smtputf8=True)
    app = open_app(sink)
    result = app.pipeline.ingest(customer_mail("jörg@kunde.test"), Envelope(channel="test"))
    assert result.outcome is Outcome.NEW_CASE
    assert deliver_due(app).sent
    [got] = sink.wait_for(1)
    assert got.rcpt_tos == ("jörg@kunde.test",)
    assert "SMTPUTF8" in got.mail_options
    assert "jörg@kunde.test" in str(got.message()["To"])


def test_idn_domain_is_sent_in_ascii_form_without_smtputf8(open_app: Any, relay_sink: Any) -> None:
    app = open_app(relay_sink)
    app.pipeline.ingest(customer_mail("anna@bücher.test"), Envelope(channel="test"))
    assert deliver_due(app).sent
    [got] = relay_sink.wait_for(1)
    assert got.rcpt_tos == ("anna@xn--bcher-kva.test",)
    assert "SMTPUTF8" not in got.mail_options
    assert got.data.isascii()


def test_without_smtputf8_the_item_fails_with_the_reason_and_nobody_is_blamed(
    open_app: Any, relay_sink: Any
) -> None:
    app = open_app(relay_sink)  # a plain relay: no SMTPUTF8 in its EHLO
    app.pipeline.ingest(customer_mail("jörg@kunde.test"), Envelope(channel="test"))
    report = deliver_due(app)
    assert report.failed and not report.sent
    [item] = outbox(app)
    assert item.status == "failed"
    assert "does not offer SMTPUTF8, needed for jörg@kunde.test" in item.last_error
    assert relay_sink.received() == []
    with app.db.session() as s:  # the relay's ability, not the customer's address
        assert list(s.scalars(select(SuppressedRecipient))) == []
