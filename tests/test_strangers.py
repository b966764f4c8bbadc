"""Issue 18 §1, contract 7: a stranger never joins a case by threading.

A sender who is not on a case (its customer, an address in To/Cc of its mail,
our own addresses, ``threading.internal_senders``, the routing address's
``trusted_domains``) gets a new case linked to the one they referred to, or
with ``stranger_reply = "append_flagged"`` a flagged message that adds no
participant and gets no auto-response. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailbuilder import count
from threading_mail import SUPPORT, case_row, ingest, mail, participants, quote, send, signer

from emaild.app import App
from emaild.errors import ConfigError
from emaild.pipeline import Outcome
from emaild.store.models import Message, OutboxItem

FIRST = mail(
    mid="<alice-1@customer.example>", frm="alice@customer.example", cc=["bob@customer.example"]
)
MALLORY = "mallory@evil.example"


def open_case(app: App) -> int:
    result = ingest(app, FIRST)
    assert result.outcome is Outcome.NEW_CASE and result.case_number is not None
    return result.case_number


def correlate_trace(app: App, row: int | None) -> list[dict[str, Any]]:
    assert row is not None
    with app.db.session() as s:
        message = s.get(Message, row)
        assert message is not None
        return [d for d in message.decision_trace if d["stage"] == "correlate"]


def test_the_issue_repro_through_the_cli(run_cli: Any) -> None:
    alice = (
        b"From: alice@customer.example\r\nTo: support@example.com\r\nSubject: Invoice dispute\r\n"
        b"Message-ID: <alice-1@customer.example>\r\n\r\nprivate\r\n"
    )
    mallory = (
        b"From: mallory@evil.example\r\nTo: support@example.com\r\nSubject: Re: hi\r\n"
        b"Message-ID: <m-1@evil.example>\r\nIn-Reply-To: <alice-1@customer.example>\r\n\r\nhi\r\n"
    )
    first = run_cli("ingest", "--json", input=alice)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["outcome"] == "new_case"
    second = run_cli("ingest", "--json", input=mallory)
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert out["outcome"] == "new_case" and out["case"] != 1
    shown = json.loads(run_cli("cases", "show", "1", "--json").stdout)
    assert shown["customer"] == "alice@customer.example"
    assert shown["participants"] == [{"address": "alice@customer.example", "role": "customer"}]
    assert [m["from"] for m in shown["messages"]] == ["alice@customer.example"]
    linked = json.loads(run_cli("cases", "show", str(out["case"]), "--json").stdout)
    assert linked["linked_case"] == 1 and linked["customer"] == MALLORY
    assert linked["participants"] == [{"address": MALLORY, "role": "customer"}]


@pytest.mark.parametrize("evidence", ["in-reply-to", "references", "our message-id", "token"])
def test_stranger_gets_a_new_linked_case_whatever_the_evidence(app: App, evidence: str) -> None:
    case = open_case(app)
    ours = str(send(app, case, in_reply_to="<alice-1@customer.example>")["Message-ID"])
    refs: dict[str, Any] = {
        "in-reply-to": {"in_reply_to": "<alice-1@customer.example>"},
        "references": {"references": ["<alice-1@customer.example>"]},
        "our message-id": {"in_reply_to": ours},
        "token": {"body": "see\n\n" + quote(f"ref:{signer(app).token(case)}:ref")},
    }[evidence]
    raw = mail(mid="<m-1@evil.example>", frm=MALLORY, cc=["eve@evil.example"], **refs)
    result = ingest(app, raw)
    assert result.outcome is Outcome.NEW_CASE and result.case_number != case
    assert case_row(app, result.case_number).linked_case_id == case
    assert participants(app, case) == {"alice@customer.example", "bob@customer.example"}
    [entry] = correlate_trace(app, result.message_row_id)
    assert entry["decision"] == "new linked case" and entry["referred_case"] == case
    assert entry["reason"] == f"{MALLORY} is not a participant of case {case}"
    # The bare case number still proves nothing for mallory afterwards.
    tagged = mail(mid="<m-2@evil.example>", frm=MALLORY, subject=f"Re: [Case #{case:08d}] x")
    again = ingest(app, tagged)
    assert again.case_number != case


def test_a_strangers_second_reply_joins_their_own_linked_case(app: App) -> None:
    case = open_case(app)
    first = ingest(
        app, mail(mid="<m-1@evil.example>", frm=MALLORY, in_reply_to="<alice-1@customer.example>")
    )
    second = ingest(
        app, mail(mid="<m-2@evil.example>", frm=MALLORY, in_reply_to="<alice-1@customer.example>")
    )
    assert first.outcome is Outcome.NEW_CASE
    assert (second.outcome, second.case_number) == (Outcome.APPENDED, first.case_number)
    assert [d["decision"] for d in correlate_trace(app, second.message_row_id)] == ["followed link"]
    assert participants(app, case) == {"alice@customer.example", "bob@customer.example"}


@pytest.mark.parametrize("sender", ["alice@customer.example", "bob@customer.example"])
def test_participants_still_thread_by_headers(app: App, sender: str) -> None:
    case = open_case(app)
    result = ingest(
        app, mail(mid=f"<r-{sender}>", frm=sender, in_reply_to="<alice-1@customer.example>")
    )
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    [entry] = correlate_trace(app, result.message_row_id)
    assert entry["decision"] == "threaded" and entry["sender_is"] in ("customer", "participant")


def test_append_flagged_adds_no_participant_and_no_response(make_app: Any) -> None:
    app = make_app(f'[[address]]\naddress = "{SUPPORT}"\nstranger_reply = "append_flagged"\n')
    case = open_case(app)
    outbox_before = count(app, OutboxItem)
    raw = mail(
        mid="<m-1@evil.example>",
        frm=MALLORY,
        cc=["eve@evil.example"],
        in_reply_to="<alice-1@customer.example>",
    )
    result = ingest(app, raw)
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    assert participants(app, case) == {"alice@customer.example", "bob@customer.example"}
    assert count(app, OutboxItem) == outbox_before
    assert count(app, Message, Message.state == "flagged", Message.case_id == case) == 1
    [entry] = correlate_trace(app, result.message_row_id)
    assert (
        entry["decision"] == "appended flagged"
        and "stranger_reply = append_flagged" in entry["policy"]
    )


def test_same_domain_colleague_is_a_stranger_unless_trusted(make_app: Any) -> None:
    colleague = mail(
        mid="<carol-1@customer.example>",
        frm="carol@customer.example",
        in_reply_to="<alice-1@customer.example>",
    )
    plain = make_app()
    case = open_case(plain)
    assert ingest(plain, colleague).case_number != case


def test_trusted_domain_and_internal_sender_thread(make_app: Any) -> None:
    app = make_app(
        f'[[address]]\naddress = "{SUPPORT}"\ntrusted_domains = ["@Customer.example"]\n'
        '[threading]\ninternal_senders = ["@staff.example", "boss@else.example"]\n'
    )
    case = open_case(app)
    for i, sender in enumerate(
        ["carol@customer.example", "agent@staff.example", "boss@else.example"]
    ):
        raw = mail(mid=f"<t-{i}@x.example>", frm=sender, in_reply_to="<alice-1@customer.example>")
        result = ingest(app, raw)
        assert (result.outcome, result.case_number) == (Outcome.APPENDED, case), sender
    assert (
        ingest(
            app,
            mail(mid="<m-9@evil.example>", frm=MALLORY, in_reply_to="<alice-1@customer.example>"),
        ).case_number
        != case
    )


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[[address]]\naddress = "s@example.com"\nstranger_reply = "join"\n', "stranger_reply"),
        (
            '[[address]]\naddress = "s@example.com"\ntrusted_domains = ["not a domain"]\n',
            "not a domain",
        ),
        ('[threading]\ninternal_senders = ["@"]\n', "not a domain"),
    ],
)
def test_bad_stranger_settings_are_config_errors(make_config: Any, toml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(toml)
    assert problem in str(err.value)
