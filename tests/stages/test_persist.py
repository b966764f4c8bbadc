"""``persist``: the rows a message becomes, or the quarantine entry instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailbuilder import build_mail, count
from stagerun import run_until

from emaild.intake import Envelope, Outcome
from emaild.store.models import Case, CaseParticipant, Message, QuarantineEntry


def test_a_new_case_with_its_message_and_participants(stages_app: Any) -> None:
    raw = build_mail(
        sender="Alice Example <Alice@Customer.test>",
        to="support@example.com, bob@customer.test",
        subject="Printer on fire",
        headers="Cc: carol@customer.test\r\n",
    )
    ctx = run_until(stages_app, raw, "persist")
    assert ctx.outcome is Outcome.NEW_CASE and ctx.case is not None and ctx.message is not None
    with stages_app.db.session() as session:
        case = session.get(Case, ctx.case.id)
        assert case is not None
        assert (case.subject, case.priority, case.customer, case.customer_name) == (
            "Printer on fire",
            "High",
            "alice@customer.test",
            "Alice Example",
        )
        roles = {
            p.address: p.role for p in session.query(CaseParticipant).filter_by(case_id=case.id)
        }
        message = session.get(Message, ctx.message.id)
        assert message is not None and message.state == "stored"
        assert message.raw_sha256 == ctx.raw_sha256
    # Our own routing address is never a participant.
    assert roles == {
        "alice@customer.test": "customer",
        "bob@customer.test": "cc",
        "carol@customer.test": "cc",
    }


def test_dropped_mail_is_stored_without_a_case(make_app: Any, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-drop.toml").write_text(
        '[[rule]]\nname = "drop-all"\ndescription = "test"\n[rule.actions]\ndrop = true\n'
    )
    app = make_app(EMAILD_RULES_DIR=str(rules))
    ctx = run_until(app, build_mail(message_id="<dropped@x.test>"), "persist")
    assert ctx.outcome is Outcome.DROPPED and ctx.case is None
    assert ctx.message is not None and ctx.message.state == "dropped"
    assert count(app, Case) == 0 and count(app, Message) == 1


def test_a_quarantine_disposition_writes_an_entry_and_no_message(stages_app: Any) -> None:
    raw = build_mail(sender="eve@elsewhere.test", to="vip@example.com")
    ctx = run_until(stages_app, raw, "persist", Envelope(channel="pipe"))
    assert ctx.outcome is Outcome.QUARANTINED and ctx.quarantine_id is not None
    assert count(stages_app, Message) == 0
    with stages_app.db.session() as session:
        entry = session.get(QuarantineEntry, ctx.quarantine_id)
        assert entry is not None
        assert (entry.reason, entry.stage, entry.raw_sha256) == (
            "accept_from",
            "accept",
            ctx.raw_sha256,
        )
        assert entry.headers.startswith("From: eve@elsewhere.test")


def test_without_a_usable_from_the_reply_to_is_the_customer(stages_app: Any) -> None:
    raw = (
        b"From: undisclosed-recipients:;\r\nReply-To: Dana <dana@customer.test>\r\n"
        b"To: support@example.com\r\nSubject: Help\r\nMessage-ID: <rt@x.test>\r\n\r\nhi\r\n"
    )
    ctx = run_until(stages_app, raw, "persist")
    assert ctx.case is not None
    with stages_app.db.session() as session:
        case = session.get(Case, ctx.case.id)
        assert case is not None and (case.customer, case.customer_name) == (
            "dana@customer.test",
            "Dana",
        )
        roles = {
            p.address: p.role for p in session.query(CaseParticipant).filter_by(case_id=case.id)
        }
    assert roles == {"dana@customer.test": "customer"}
