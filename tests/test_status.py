"""``emaild status``: one screen from the database, whoever wrote it."""

from __future__ import annotations

import json
import smtplib
from datetime import UTC, datetime
from typing import Any

from smtp_helpers import running_listener

from emaild.addresses import add_managed, validate_routing
from emaild.app import App
from emaild.outbox import enqueue
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import ChannelStatus, QuarantineEntry

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MAIL = (
    b"From: carol@customer.test\r\nTo: {to}\r\nSubject: hello\r\n"
    b"Message-ID: <{n}@customer.test>\r\n\r\nhi\r\n"
)


def mail(n: int, to: str) -> bytes:
    return MAIL.replace(b"{to}", to.encode()).replace(b"{n}", str(n).encode())


def fill(app: App) -> int:
    """A managed unverified address with two held messages (one through a real
    listener, which then reports its health), outbox items in each state and a
    quarantined message. Returns the listener's port."""
    routing = validate_routing({"address": "help@acme.test"})
    app.db.run(lambda s: add_managed(s, app.config, routing, NOW))
    app.pipeline.addresses.invalidate()
    held = app.pipeline.ingest(mail(1, "help@acme.test"), Envelope(channel="pipe"))
    assert held.outcome is Outcome.HELD

    def outbox(s: Any) -> None:
        for status, error in (("queued", "451 4.3.0 try later"), ("sent", ""), ("failed", "")):
            item = enqueue(
                s, mail(9, "x@customer.test"), mail_from="", rcpt_to="x@c.test", now=NOW, kind="t"
            )
            item.status, item.last_error = status, error
        s.add(
            QuarantineEntry(
                created_at=NOW, raw_sha256="0" * 64, reason="error", stage="parse", status="held"
            )
        )

    app.db.run(outbox)
    with running_listener(app) as listener, smtplib.SMTP(*listener.address) as client:
        client.sendmail("carol@customer.test", ["help@acme.test"], mail(2, "help@acme.test"))
        return listener.address[1]


def test_status_json_has_addresses_channels_outbox_and_quarantine(app: App, run_cli: Any) -> None:
    port = fill(app)
    done = run_cli("status", "--json")
    assert done.returncode == 1, done.stderr.decode()  # a failed item, a failed message
    status = json.loads(done.stdout)
    by_address = {a["address"]: a for a in status["addresses"]}
    assert by_address["help@acme.test"]["verified"] is False
    assert by_address["help@acme.test"]["held_messages"] == 2
    assert status["held_messages"] == 2
    channels = {c["name"]: c for c in status["channels"]}
    served = channels[f"smtp:127.0.0.1:{port}"]
    assert served["reported"] is True
    assert served["last_success_at"] is not None
    # Configured but never reported (no daemon ran on the configured address).
    assert channels["smtp:127.0.0.1:2525"]["reported"] is False
    assert {k: status["outbox"][k] for k in ("queued", "sent", "failed")} == {
        "queued": 1,
        "sent": 1,
        "failed": 1,
    }
    assert status["outbox"]["last_error"] == "451 4.3.0 try later"
    assert status["quarantine"]["held"] == 1
    assert status["attention"] == [
        "outbox: 1 failed (emaild outbox list --status failed)",
        "quarantine: 1 messages failed processing (emaild quarantine list)",
    ]


def test_status_screen_reads_top_to_bottom(app: App, run_cli: Any) -> None:
    port = fill(app)
    done = run_cli("status")
    assert done.returncode == 1, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert len(lines) <= 25, "one screen"
    text = "\n".join(lines)
    sections = [text.index(h) for h in ("Routing addresses", "Channels", "Outbox:", "Quarantine:")]
    assert sections == sorted(sections)
    [help_line] = [line for line in lines if line.strip().startswith("help@acme.test")]
    assert help_line.split()[:5] == ["help@acme.test", "database", "yes", "NO", "2"]
    [served] = [line for line in lines if f"smtp:127.0.0.1:{port}" in line]
    assert "s ago" in served or "m ago" in served
    assert "no report (daemon not started?)" in text
    assert "Outbox: 1 queued, 1 sent, 1 failed" in text
    assert "last relay error: 451 4.3.0 try later" in text
    assert "Quarantine: 1 held  (emaild quarantine list)" in text
    assert "Held for unverified addresses: 2" in text
    assert text.endswith(
        "Attention\n  outbox: 1 failed (emaild outbox list --status failed)\n"
        "  quarantine: 1 messages failed processing (emaild quarantine list)"
    )


def test_status_of_an_empty_installation(run_cli: Any) -> None:
    done = run_cli("status", "--json")
    assert done.returncode == 0, done.stderr.decode()
    status = json.loads(done.stdout)
    assert [(a["address"], a["verified"]) for a in status["addresses"]] == [
        ("support@example.com", True)
    ]
    assert status["outbox"]["queued"] == 0
    assert status["quarantine"]["held"] == 0
    assert status["attention"] == []
    quiet = run_cli("status", "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, b"", b"")


def test_status_exit_code_and_quiet_for_scripts(app: App, run_cli: Any) -> None:
    """Routine holds keep it at 0; a failing channel or a failed item makes it 1."""
    fine = QuarantineEntry(
        created_at=NOW, raw_sha256="1" * 64, reason="rule", stage="rules", status="held"
    )
    app.db.run(lambda s: s.add(fine))
    assert run_cli("status", "--quiet").returncode == 0
    app.db.run(
        lambda s: s.add(
            ChannelStatus(
                name="imap:shop",
                kind="imap",
                last_failure_at=NOW,
                last_error="login failed",
                consecutive_failures=3,
            )
        )
    )
    quiet = run_cli("status", "-q")
    assert quiet.returncode == 1
    assert quiet.stdout == b"channel imap:shop: 3 failures in a row: login failed\n"
