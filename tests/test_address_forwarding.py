"""``emaild address test-forwarding`` against a real relay and the real SMTP listener."""

from __future__ import annotations

import json
import time
from typing import Any

from forwarder import Forwarder, smtp_to
from mailbuilder import count
from smtp_helpers import running_listener
from sqlalchemy import select

from emaild.app import App
from emaild.store.models import Case, Message, VerificationToken

ADDRESS = "support@example.com"  # the embedded default: a config address


def test_forwarding_that_works_reports_path_and_delay(
    app: App, run_cli: Any, relay_sink: Any
) -> None:
    with (
        running_listener(app) as listener,
        Forwarder(relay_sink, smtp_to(*listener.address)) as forwarder,
    ):
        done = run_cli(
            "address",
            "test-forwarding",
            ADDRESS,
            "--timeout",
            "30",
            "--json",
            env=relay_sink.relay_env,
        )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert forwarder.forwarded == 1
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["channel"] == "smtp"
    assert report["relay_status"] == "sent"
    assert 0 < report["delay_seconds"] < 30  # the real round trip, never a clamped 0
    assert report["path"][0].startswith(f"sent: relay {relay_sink.address} accepted it")
    assert report["path"][-1].startswith("arrived: via smtp from support@example.com for")
    assert report["path"][-1].endswith("without a case")
    # The relay's Received hop is on the path (aiosmtpd adds none; the listener's own
    # view is the envelope), and nothing was rewritten on the way.
    assert report["notes"] == []
    # The test message is recorded, never a case.
    assert count(app, Case) == 0
    with app.db.session() as s:
        token = s.scalars(select(VerificationToken)).one()
        assert (token.purpose, token.used_via) == ("fwdtest", "smtp")
        message = s.get(Message, token.message_row_id)
        assert message is not None and message.case_id is None
        assert message.subject.startswith("emaild forwarding test emaild-fwdtest-")


def test_a_relay_that_swallows_the_message_fails_with_an_explanation(
    app: App, run_cli: Any, relay_sink: Any
) -> None:
    started = time.monotonic()
    done = run_cli(
        "address", "test-forwarding", ADDRESS, "--timeout", "2", env=relay_sink.relay_env
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr.decode()
    assert took >= 2
    text = done.stdout.decode()
    lines = text.splitlines()
    assert lines[0] == f"forwarding test for {ADDRESS} FAILED"
    assert f"  - the relay {relay_sink.address} accepted the test message" in text
    assert (
        "  - no message carrying the marker reached emaild within 2s on any channel "
        "(SMTP 127.0.0.1:2525)" in text
    )
    causes = text.split("likely causes:\n", 1)[1]
    assert f"forwarding from {ADDRESS} to emaild is not set up" in causes
    assert "spam filter" in causes
    assert "marker was lost" in causes
    assert "no emaild channel has ever reported to this database" in causes
    [mail] = relay_sink.received()  # the relay did get it: the loss is after the relay

    # When the swallowed message turns up after all, it is still never a case.
    with running_listener(app) as listener:
        smtp_to(*listener.address)(mail)
    assert count(app, Case) == 0
    with app.db.session() as s:
        assert s.scalars(select(VerificationToken.used_via)).one() == "smtp"


def test_a_relay_that_drops_the_connection_fails_at_once(run_cli: Any, relay_sink: Any) -> None:
    relay_sink.mode = "drop"
    done = run_cli(
        "address", "test-forwarding", ADDRESS, "--timeout", "60", env=relay_sink.relay_env
    )
    assert done.returncode == 1
    text = done.stdout.decode()
    assert f"the relay {relay_sink.address} did not accept the test message (queued" in text
    assert "dropped the connection" in text
    assert "it stays in the outbox and is retried" in text
    assert relay_sink.received() == []
    assert relay_sink.counters.dropped == 1
