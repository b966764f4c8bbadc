"""Rules and accept-from inside the real pipeline, the CLI and reload, on both backends."""

from __future__ import annotations

import json
import smtplib
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_mail, count
from smtp_helpers import smtp_listener
from sqlalchemy import select

from emaild.accept_from import sender_refusal
from emaild.app import App
from emaild.config import RoutingAddress, load_config
from emaild.errors import ConfigError
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Case, Message, QuarantineEntry

ROOT = Path(__file__).resolve().parent.parent


def message(
    n: int,
    *,
    sender: str = "alice@customer.test",
    subject: str = "Printer problem",
    headers: str = "",
    to: str = "support@example.com",
) -> bytes:
    return build_mail(
        sender=f"Alice <{sender}>",
        to=to,
        subject=subject,
        message_id=f"<rules-{n}@customer.test>",
        headers=headers,
        body="The printer is broken.",
    )


def only_case(app: App) -> Case:
    with app.db.session() as s:
        return s.scalars(select(Case)).one()


def trace_of(app: App, row: int | None) -> list[dict[str, Any]]:
    with app.db.session() as s:
        stored = s.get(Message, row)
        assert stored is not None
        return list(stored.decision_trace)


def decisions(trace: list[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    return [d for d in trace if d["stage"] == stage]


# --- case fields and the decision trace ---------------------------------------------------------
def test_urgent_subject_sets_high_and_the_trace_explains_it(app: App) -> None:
    result = app.pipeline.ingest(message(1, subject="URGENT: outage"), Envelope(channel="test"))
    assert result.outcome is Outcome.NEW_CASE
    case = only_case(app)
    assert (case.priority, case.origin, case.tags) == ("High", "Email", ["urgent"])
    rules = decisions(trace_of(app, result.message_row_id), "rules")
    matched = [d for d in rules if d["decision"] == "matched"]
    assert [d["rule"] for d in matched] == ["urgent-wording"]
    assert matched[0]["at"] == "10-priority.toml:27"
    assert matched[0]["changed"]["priority"] == ["Medium", "High"]
    (fields,) = [d for d in rules if d["decision"] == "case fields"]
    assert fields["set_by"]["priority"] == "rule urgent-wording"
    assert fields["set_by"]["origin"] == "routing address support@example.com"


def test_x_priority_header_sets_high(app: App) -> None:
    app.pipeline.ingest(message(2, headers="X-Priority: 1\r\n"), Envelope(channel="test"))
    assert only_case(app).priority == "High"


def test_routing_defaults_apply_when_no_rule_matches(make_config: Any) -> None:
    config = make_config(
        "[[address]]\n"
        'address = "support@example.com"\n'
        'priority = "Low"\norigin = "Web"\nowner = "tier1"\ncategory = "Hardware"\n'
        'tags = ["hw"]\n'
    )
    app = App.open(config)
    try:
        result = app.pipeline.ingest(message(3), Envelope(channel="test"))
        case = only_case(app)
        assert (case.priority, case.origin, case.owner, case.category, case.tags) == (
            "Low",
            "Web",
            "tier1",
            "Hardware",
            ["hw"],
        )
        rules = decisions(trace_of(app, result.message_row_id), "rules")
        assert rules[0] == {
            "stage": "rules",
            "decision": "no rule matched",
            "rules": len(app.services.rules),
            "kept": "routing defaults",
        }
    finally:
        app.close()


def test_rules_see_the_routing_address(make_config: Any, tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "10-billing.toml").write_text(
        '[[rule]]\nname = "billing-queue"\ndescription = "Billing mail goes to finance"\n'
        'all = [{ field = "routing_address", equals = "billing@example.com" }]\n'
        'actions = { owner = "finance", origin = "Billing email" }\n',
        encoding="utf-8",
    )
    config = make_config(
        '[[address]]\naddress = "support@example.com"\n'
        '[[address]]\naddress = "billing@example.com"\naliases = ["invoices@example.com"]\n',
        EMAILD_RULES_DIR=str(rules_dir),
    )
    app = App.open(config)
    try:
        app.pipeline.ingest(message(4, to="invoices@example.com"), Envelope(channel="test"))
        app.pipeline.ingest(message(5), Envelope(channel="test"))
        with app.db.session() as s:
            rows = s.execute(select(Case.routing_address, Case.owner, Case.origin)).all()
        assert sorted(tuple(r) for r in rows) == [
            ("billing@example.com", "finance", "Billing email"),
            ("support@example.com", "", "Email"),
        ]
    finally:
        app.close()


# --- quarantine, drop, if_new_case ------------------------------------------------------------
def test_spam_rule_quarantines_in_the_same_transaction(app: App) -> None:
    raw = message(6, headers="X-Spam-Flag: YES\r\n")
    result = app.pipeline.ingest(raw, Envelope(channel="test"))
    assert result.outcome is Outcome.QUARANTINED
    assert count(app, Case) == 0 and count(app, Message) == 0
    with app.db.session() as s:
        entry = s.scalars(select(QuarantineEntry)).one()
        assert (entry.id, entry.reason, entry.stage) == (result.quarantine_id, "rule", "rules")
        assert entry.error == "rule spam-flagged: flagged as spam upstream"
        assert app.blobs.read(entry.raw_sha256) == raw
    again = app.pipeline.ingest(raw, Envelope(channel="test"))
    assert again.quarantine_id == result.quarantine_id
    with app.db.session() as s:
        assert s.scalars(select(QuarantineEntry.attempts)).one() == 2


def test_drop_rule_keeps_the_raw_message_without_a_case(make_app: Any, tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "50-noise.toml").write_text(
        '[[rule]]\nname = "newsletter"\ndescription = "Our own newsletter bouncing around"\n'
        'all = [{ field = "subject", starts_with = "[newsletter]" }]\n'
        'actions = { drop = true, reason = "newsletter copy" }\n',
        encoding="utf-8",
    )
    app = make_app(EMAILD_RULES_DIR=str(rules_dir))
    try:
        raw = message(7, subject="[Newsletter] June")
        result = app.pipeline.ingest(raw, Envelope(channel="test"))
        assert result.outcome is Outcome.DROPPED
        assert result.detail == "rule newsletter: newsletter copy"
        assert count(app, Case) == 0
        with app.db.session() as s:
            stored = s.scalars(select(Message)).one()
            assert (stored.state, stored.case_id) == ("dropped", None)
            assert app.blobs.read(stored.raw_sha256) == raw
        trace = trace_of(app, result.message_row_id)
        assert {"stage": "rules", "decision": "dropped"}.items() <= decisions(trace, "rules")[
            -1
        ].items()
        # Dropped is stored: the same message again is a duplicate, not a second row.
        assert app.pipeline.ingest(raw, Envelope()).outcome is Outcome.DUPLICATE
    finally:
        app.close()


def test_corpus_bounce_without_a_case_is_dropped_not_opened(app: App, corpus: Path) -> None:
    raw = (corpus / "sisimai" / "maildir" / "bsd" / "rfc3464-01.eml").read_bytes()
    result = app.pipeline.ingest(raw, Envelope(channel="test"))
    assert result.outcome is Outcome.DROPPED, result.trace
    assert result.detail.startswith("rule bounce-no-new-case: ")
    assert count(app, Case) == 0
    with app.db.session() as s:
        assert s.scalars(select(Message.state)).one() == "dropped"


def test_auto_reply_threading_onto_a_case_is_appended(app: App) -> None:
    first = app.pipeline.ingest(message(8), Envelope(channel="test"))
    assert first.outcome is Outcome.NEW_CASE
    auto = (
        b"From: Alice <alice@customer.test>\r\nTo: support@example.com\r\n"
        b"Subject: Out of office: Re: Printer problem\r\nAuto-Submitted: auto-replied\r\n"
        b"In-Reply-To: <rules-8@customer.test>\r\nMessage-ID: <ooo-1@customer.test>\r\n"
        b"\r\nI am away.\r\n"
    )
    result = app.pipeline.ingest(auto, Envelope(channel="test"))
    assert result.outcome is Outcome.APPENDED, result.trace
    assert result.case_number == first.case_number
    trace = trace_of(app, result.message_row_id)
    assert any(d["decision"] == "if new case: dropped" for d in decisions(trace, "rules"))
    # The same auto-reply with nothing to thread onto opens no case.
    lone = auto.replace(b"In-Reply-To: <rules-8@customer.test>\r\n", b"").replace(
        b"ooo-1", b"ooo-2"
    )
    assert app.pipeline.ingest(lone, Envelope(channel="test")).outcome is Outcome.DROPPED
    assert count(app, Case) == 1


# --- accept-from -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sender", "allowed"),
    [
        ("bob@partner.test", True),
        ("bob@eu.partner.test", True),
        ("BOB@Partner.Test", True),
        ("ceo@vip.test", True),
        ("other@vip.test", False),
        ("bob@notpartner.test", False),
        ("", False),
    ],
)
def test_sender_refusal(sender: str, allowed: bool) -> None:
    routing = RoutingAddress(
        address="support@example.com", accept_from=["partner.test", "ceo@vip.test"]
    )
    refusal = sender_refusal(routing, sender)
    assert (refusal is None) == allowed
    if not allowed:
        assert refusal and "not in accept_from of support@example.com" in refusal


ACCEPT_CASES = [
    # (reject_action, channel, outcome, message state or None, quarantine reason or None)
    ("discard", "pipe", Outcome.DROPPED, "dropped", None),
    ("discard", "smtp", Outcome.DROPPED, "dropped", None),
    ("quarantine", "imap", Outcome.QUARANTINED, None, "accept_from"),
    ("reject", "pipe", Outcome.DROPPED, "dropped", None),
    ("reject", "imap", Outcome.DROPPED, "dropped", None),
    ("reject", "smtp", Outcome.REJECTED, None, None),
    ("reject", "lmtp", Outcome.REJECTED, None, None),
]


@pytest.mark.parametrize(("action", "channel", "outcome", "state", "reason"), ACCEPT_CASES)
def test_accept_from_actions(
    make_config: Any,
    action: str,
    channel: str,
    outcome: Outcome,
    state: str | None,
    reason: str | None,
) -> None:
    app = App.open(
        make_config(
            '[[address]]\naddress = "support@example.com"\n'
            f'accept_from = ["partner.test"]\nreject_action = "{action}"\n'
        )
    )
    try:
        # The envelope sender passed (an SMTP listener checked it at RCPT); From decides.
        envelope = Envelope(channel=channel, mail_from="bob@partner.test")
        ok = app.pipeline.ingest(message(9, sender="bob@partner.test"), envelope)
        assert ok.outcome is Outcome.NEW_CASE
        raw = message(10, sender="mallory@evil.test")
        result = app.pipeline.ingest(raw, envelope)
        assert result.outcome is outcome
        assert "mallory@evil.test is not in accept_from" in result.detail
        assert count(app, Case) == 1
        with app.db.session() as s:
            states = s.scalars(select(Message.state).order_by(Message.id)).all()
            entries = s.scalars(select(QuarantineEntry)).all()
        assert states == ["stored"] + ([state] if state else [])
        assert [e.reason for e in entries] == ([reason] if reason else [])
        if state or reason:  # kept: the raw bytes are in the blob store
            assert app.blobs.read(result_sha(app, state, entries)) == raw
        if state == "dropped" and action == "reject":
            accept = decisions(trace_of(app, result.message_row_id), "accept")
            assert "no bounce" in accept[0]["note"]
    finally:
        app.close()


def result_sha(app: App, state: str | None, entries: list[QuarantineEntry]) -> str:
    if entries:
        return entries[0].raw_sha256
    with app.db.session() as s:
        return str(s.scalars(select(Message.raw_sha256).where(Message.state == state)).one())


def test_smtp_rejects_at_data_when_the_from_header_is_not_accepted(make_config: Any) -> None:
    """Envelope sender passes RCPT; the From header fails the pipeline: 550 5.7.1 at DATA."""
    app = App.open(
        make_config(
            '[[address]]\naddress = "support@example.com"\naccept_from = ["partner.test"]\n'
        )
    )
    try:
        with smtp_listener(app) as (host, port), smtplib.SMTP(host, port) as client:
            client.ehlo()
            client.mail("bob@partner.test")
            assert client.rcpt("support@example.com")[0] == 250
            code, text = client.data(message(11, sender="mallory@evil.test"))
            assert code == 550 and text.startswith(b"5.7.1 "), (code, text)
            client.rset()
            client.sendmail(
                "bob@partner.test", ["support@example.com"], message(12, sender="bob@partner.test")
            )
        assert count(app, Case) == 1 and count(app, QuarantineEntry) == 0
    finally:
        app.close()


# --- reload --------------------------------------------------------------------------------------
def test_reload_with_a_bad_rule_file_keeps_the_old_rules(make_config: Any, tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rule_file = rules_dir / "10-vip.toml"
    good = (
        '[[rule]]\nname = "vip"\ndescription = "VIP domain"\n'
        'all = [{ field = "from_domain", equals = "customer.test" }]\n'
        'actions = { owner = "vip-desk" }\n'
    )
    rule_file.write_text(good, encoding="utf-8")
    config = make_config(EMAILD_RULES_DIR=str(rules_dir))
    app = App.open(config)
    try:
        old_rules = app.pipeline.services.rules
        rule_file.write_text(good.replace("from_domain", "from_domian"), encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            app.reload(load_config(Path(config.source), _env(config)))
        assert str(caught.value).startswith(
            f"{rule_file}:4: rule 'vip': unknown field 'from_domian'"
        )
        assert app.pipeline.services.rules is old_rules
        app.pipeline.ingest(message(13), Envelope(channel="test"))
        assert only_case(app).owner == "vip-desk"
        # Fixed file: the reload takes, and the new rules apply.
        rule_file.write_text(good.replace("vip-desk", "vip-team"), encoding="utf-8")
        app.reload(load_config(Path(config.source), _env(config)))
        assert app.pipeline.services.rules is not old_rules
        result = app.pipeline.ingest(message(14), Envelope(channel="test"))
        with app.db.session() as s:
            case = s.get(Case, result.case_number)
            assert case is not None and case.owner == "vip-team"
    finally:
        app.close()


def _env(config: Any) -> dict[str, str]:
    return {
        "EMAILD_STATE_DIR": config.storage.state_dir,
        "EMAILD_DATABASE_URL": config.storage.database_url,
        "EMAILD_RULES_DIR": config.rules_dir,
        "HOME": str(Path(config.storage.state_dir).parent),
    }


# --- the command line ----------------------------------------------------------------------------
def test_rules_test_json_prints_matches_and_case_and_stores_nothing(
    run_cli: Any, tmp_path: Path
) -> None:
    eml = tmp_path / "urgent.eml"
    eml.write_bytes(message(15, subject="Site down!", headers="Importance: high\r\n"))
    proc = run_cli("rules", "test", str(eml), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["matched"] == ["high-priority-headers", "urgent-wording"]
    assert report["case"]["priority"] == "High"
    assert report["case"]["origin"] == "Email"
    assert report["case"]["tags"] == ["urgent"]
    assert report["case"]["owner"] == ""
    assert report["outcome"] == "new_case"
    listed = run_cli("cases", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_rules_test_address_option_and_custom_rules_dir(run_cli: Any, tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "10.toml").write_text(
        '[[rule]]\nname = "billing"\ndescription = "Billing mail to finance"\n'
        'all = [{ field = "routing_address", equals = "billing@example.com" }]\n'
        'actions = { owner = "finance", add_tags = ["money"] }\n',
        encoding="utf-8",
    )
    config = tmp_path / "emaild.toml"
    config.write_text(
        '[[address]]\naddress = "support@example.com"\n'
        '[[address]]\naddress = "billing@example.com"\npriority = "Low"\norigin = "Billing"\n',
        encoding="utf-8",
    )
    eml = tmp_path / "m.eml"
    eml.write_bytes(message(16))
    env = {"EMAILD_RULES_DIR": str(rules_dir), "EMAILD_CONFIG": str(config)}
    proc = run_cli("rules", "test", str(eml), "--address", "billing@example.com", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["routing_address"] == "billing@example.com"
    assert report["matched"] == ["billing"]
    assert {k: report["case"][k] for k in ("priority", "origin", "owner", "tags")} == {
        "priority": "Low",
        "origin": "Billing",
        "owner": "finance",
        "tags": ["money"],
    }
    plain = run_cli("rules", "test", str(eml), env=env)
    assert plain.returncode == 0, plain.stderr
    assert b"matched: no rule" in plain.stdout
    unknown = run_cli("rules", "test", str(eml), "--address", "nobody@example.com", env=env)
    assert unknown.returncode == 2  # a usage mistake, like every command's
    assert b"Invalid value for '--address': nobody@example.com is not a routing address" in (
        unknown.stderr
    )


def test_rules_test_shows_quarantine_and_if_new_case(run_cli: Any, tmp_path: Path) -> None:
    spam = tmp_path / "spam.eml"
    spam.write_bytes(message(17, headers="X-Spam-Status: Yes, score=9.1\r\n"))
    report = json.loads(run_cli("rules", "test", str(spam), "--json").stdout)
    assert (report["outcome"], report["matched"]) == ("quarantined", ["spam-flagged"])
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes(
        b"From: MAILER-DAEMON@mx.test\r\nTo: support@example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n\r\nsorry\r\n"
    )
    report = json.loads(run_cli("rules", "test", str(bounce), "--json").stdout)
    assert report["outcome"] == "new_case"
    assert report["if_new_case"] == "dropped"
    assert report["case"]["auto_response"] == ""


def test_check_refuses_a_bad_rule_file_with_exit_78(run_cli: Any, tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    bad = rules_dir / "10-bad.toml"
    bad.write_text(
        '[[rule]]\nname = "typo"\ndescription = "d"\n'
        'any = [\n  { field = "subject", contains = "a" },\n'
        "  { field = \"body\", regex = '[unclosed' },\n]\n"
        'actions = { priority = "High" }\n',
        encoding="utf-8",
    )
    proc = run_cli("check", env={"EMAILD_RULES_DIR": str(rules_dir)})
    assert proc.returncode == 78
    assert proc.stderr.decode().strip() == (
        f"emaild: {bad}:6: rule 'typo': bad regex '[unclosed': "
        "unterminated character set at position 0"
    )
    bad.write_text(
        '[[rule]]\nname = "ack"\ndescription = "d"\nactions = { auto_response = "nope" }\n',
        encoding="utf-8",
    )
    proc = run_cli("check", env={"EMAILD_RULES_DIR": str(rules_dir)})
    assert proc.returncode == 78
    assert proc.stderr.decode().startswith(
        f"emaild: {bad}:4: rule 'ack': no auto-response template 'nope' (have: "
    )
    good = run_cli("check", env={"EMAILD_RULES_DIR": str(ROOT / "emaild" / "defaults" / "rules")})
    assert good.returncode == 0, good.stderr
    assert b"rules" in good.stdout


def test_cases_show_explains_priority(run_cli: Any) -> None:
    proc = run_cli("ingest", input=message(18, subject="Outage in EU"))
    assert proc.returncode == 0, proc.stderr
    shown = run_cli("cases", "show", proc.stdout.decode().strip())
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "rules: matched rule=urgent-wording at=10-priority.toml:27" in text
    assert "'priority': 'rule urgent-wording'" in text


def test_one_message_to_an_address_and_its_alias_is_one_case(make_config: Any) -> None:
    app = App.open(
        make_config(
            '[[address]]\naddress = "support@example.com"\naliases = ["help@example.com"]\n'
            'priority = "High"\n'
        )
    )
    try:
        raw = message(19, to="support@example.com, help@example.com")
        results = []
        sender = "alice@customer.test"
        for rcpt in ("support@example.com", "help@example.com"):  # LMTP: one call per recipient
            results.append(
                app.pipeline.ingest(
                    raw, Envelope(channel="lmtp", mail_from=sender, rcpt_to=(rcpt,))
                )
            )
        first, second = results
        assert (first.outcome, second.outcome) == (Outcome.NEW_CASE, Outcome.DUPLICATE)
        assert second.case_number == first.case_number
        assert count(app, Case) == 1 and count(app, Message) == 1
        assert only_case(app).priority == "High"
    finally:
        app.close()


def test_rules_test_on_unparseable_input_says_it_would_be_quarantined(
    run_cli: Any, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b"no headers here\n\njust text\n")
    proc = run_cli("rules", "test", str(junk), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "quarantined"
    assert report["reason"].startswith("parse: InputError: ")
    assert report["matched"] == []


def test_rules_list_shows_the_shipped_rules_in_order(run_cli: Any) -> None:
    proc = run_cli(
        "rules",
        "list",
        "--json",
        env={"EMAILD_RULES_DIR": str(ROOT / "emaild" / "defaults" / "rules")},
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    names = [r["name"] for r in rows]
    assert names[:3] == ["low-priority-headers", "high-priority-headers", "urgent-wording"]
    assert names[-1] == "spam-flagged"
    assert rows[2]["at"] == "10-priority.toml:27"
    assert rows[2]["actions"] == {"priority": "High", "add_tags": ["urgent"]}
