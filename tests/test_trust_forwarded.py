"""Forwarded mail and Cc: an agent's forward opens the case in the customer's name.

``tests/forwarded/`` holds one forward in each client's format (Gmail,
Outlook with and without ``[mailto:]``, Apple Mail, Thunderbird, and an
attached ``message/rfc822``), written after what those clients produce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from threading_mail import SUPPORT, case_row, ingest, mail

from emaild.app import App
from emaild.mime.forwarded import find_original
from emaild.mime.parse import parse_message
from emaild.pipeline import Outcome
from emaild.store.models import CaseParticipant, OutboxItem

FORWARDS = sorted((Path(__file__).parent / "forwarded").glob("*.eml"))
MX = "mx.example.net"


def test_the_forward_corpus_has_every_client() -> None:
    names = {p.stem for p in FORWARDS}
    assert {"gmail", "outlook", "outlook-mailto", "apple-mail", "thunderbird", "attached"} <= names


@pytest.mark.parametrize("path", FORWARDS, ids=[p.stem for p in FORWARDS])
def test_original_sender_is_found(path: Path) -> None:
    raw = path.read_bytes()
    parsed = parse_message(raw, spool_threshold=1 << 20)
    found = find_original(parsed.text, raw)
    assert found is not None
    assert found.addr == "carol@customer.test"
    assert "Carol" in found.name


@pytest.mark.parametrize(
    "text",
    [
        "Just a note, nothing forwarded.",
        "---------- Forwarded message ---------\nFrom: Carol Customer\nDate: today\n",
        "-----Original Message-----\n\nSome text\nFrom: carol@customer.test\n",
        "Begin forwarded message:\n\nSubject: x\nnot a header line\nFrom: carol@customer.test\n",
    ],
)
def test_no_original_without_a_forward_block_with_an_address(text: str) -> None:
    assert find_original(text, text.encode()) is None


def roles(app: App, number: int | None) -> dict[str, str]:
    with app.db.session() as s:
        rows = s.execute(
            select(CaseParticipant.address, CaseParticipant.role).where(
                CaseParticipant.case_id == number
            )
        )
        return {a: r for a, r in rows}


def outbox_recipients(app: App) -> list[str]:
    with app.db.session() as s:
        return list(s.scalars(select(OutboxItem.rcpt_to)))


def forward_app(make_app: Any, tmp_path: Path, *, policy: str = "record", rule: str = "") -> App:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "10.toml").write_text(rule, encoding="utf-8")
    app: App = make_app(
        f'rules_dir = "{rules_dir}"\n'
        f'[trust]\nauthserv_ids = ["{MX}"]\nmax_cc_participants = 2\n'
        '[threading]\ninternal_senders = ["@example.com"]\n'
        f'[[address]]\naddress = "{SUPPORT}"\nauth_policy = "{policy}"\n'
    )
    return app


@pytest.mark.parametrize("name", ["gmail", "attached"])
def test_forward_opens_the_case_for_the_customer(make_app: Any, tmp_path: Path, name: str) -> None:
    app = forward_app(make_app, tmp_path)
    result = ingest(app, (Path(__file__).parent / "forwarded" / f"{name}.eml").read_bytes())
    assert result.outcome is Outcome.NEW_CASE
    case = case_row(app, result.case_number)
    assert (case.customer, case.customer_name) == ("carol@customer.test", "Carol Customer")
    assert roles(app, result.case_number) == {
        "carol@customer.test": "customer",
        "agent@example.com": "forwarder",
    }
    unwrap = [d for d in result.trace if d["stage"] == "unwrap"]
    assert unwrap[0]["decision"] == "forwarded" and unwrap[0]["forwarder"] == "agent@example.com"
    # Neither the agent nor the customer is answered unless a rule says so.
    assert outbox_recipients(app) == []


def test_a_rule_sends_the_customer_the_auto_response(make_app: Any, tmp_path: Path) -> None:
    rule = (
        '[[rule]]\nname = "answer-forwarded"\ndescription = "tell the customer we have it"\n'
        'all = [{ field = "forwarded_by", ends_with = "@example.com" }]\n'
        'actions = { auto_response = "default" }\n'
    )
    app = forward_app(make_app, tmp_path, rule=rule)
    result = ingest(app, (Path(__file__).parent / "forwarded" / "outlook.eml").read_bytes())
    assert result.outcome is Outcome.NEW_CASE
    assert outbox_recipients(app) == ["carol@customer.test"]


def test_forward_from_an_outsider_is_just_mail(make_app: Any, tmp_path: Path) -> None:
    app = forward_app(make_app, tmp_path)
    raw = (Path(__file__).parent / "forwarded" / "gmail.eml").read_bytes()
    raw = raw.replace(b"agent@example.com>\r\nTo: support", b"eve@outside.test>\r\nTo: support")
    result = ingest(app, raw)
    assert case_row(app, result.case_number).customer == "eve@outside.test"
    assert not [d for d in result.trace if d["stage"] == "unwrap"]


def test_unauthenticated_internal_sender_is_not_believed(make_app: Any, tmp_path: Path) -> None:
    app = forward_app(make_app, tmp_path, policy="require_for_threading")
    raw = (Path(__file__).parent / "forwarded" / "gmail.eml").read_bytes()
    forged = ingest(app, raw)
    assert case_row(app, forged.case_number).customer == "agent@example.com"
    assert [d["decision"] for d in forged.trace if d["stage"] == "unwrap"] == ["forward ignored"]
    signed = (
        b"Authentication-Results: "
        + MX.encode()
        + b"; dmarc=pass\r\n"
        + raw.replace(b"<gmail@example.com>", b"<gmail2@example.com>")
    )
    genuine = ingest(app, signed)
    assert case_row(app, genuine.case_number).customer == "carol@customer.test"


def test_cc_becomes_followers_up_to_the_cap(make_app: Any, tmp_path: Path) -> None:
    app = forward_app(make_app, tmp_path)
    cc = ["bob@customer.test", "dan@customer.test", "erin@customer.test", "SUPPORT@example.com"]
    result = ingest(app, mail(mid="<cc1@customer.test>", cc=cc))
    assert roles(app, result.case_number) == {
        "alice@customer.test": "customer",
        "bob@customer.test": "cc",
        "dan@customer.test": "cc",
    }
    capped = [d for d in result.trace if d["decision"] == "cc cap"]
    assert capped and capped[0]["not_added"] == ["erin@customer.test"]
    # A follower may thread onto the case by its number, as the customer may.
    subject = f"Re: Printer on fire [Case #{result.case_number:08d}]"
    reply = ingest(app, mail(mid="<cc2@customer.test>", frm="dan@customer.test", subject=subject))
    assert (reply.outcome, reply.case_number) == (Outcome.APPENDED, result.case_number)
