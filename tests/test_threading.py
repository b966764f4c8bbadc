"""Threading through the real pipeline, on SQLite and PostgreSQL: each step of the
matching order, its negative, and the closed-case policy."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from threading_mail import (
    SUPPORT,
    case_row,
    close_case,
    ingest,
    mail,
    participants,
    quote,
    send,
    signer,
    thread_index,
    trace,
    via,
)

from emaild.app import App
from emaild.correlation.tokens import CaseSigner, load_signer
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Case, Message

FIRST = mail(mid="<m1@customer.test>", cc=["bob@customer.test"])


def open_case(app: App, raw: bytes = FIRST) -> int:
    result = ingest(app, raw)
    assert result.outcome is Outcome.NEW_CASE
    assert result.case_number is not None
    return result.case_number


def case_count(app: App) -> int:
    with app.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Case)) or 0)


# --- step 1: In-Reply-To / References ------------------------------------------
def test_reply_to_our_signed_message_id_threads(app: App) -> None:
    case = open_case(app)
    ours = send(app, case)
    reply = mail(
        mid="<r1@customer.test>",
        subject="totally different subject",
        in_reply_to=ours["Message-ID"],
        body="Still burning.\n\n" + quote("Thank you, we are looking into it."),
    )
    result = ingest(app, reply)
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    assert via(app, result) == "in-reply-to"
    assert trace(app, result.message_row_id)[0]["how"] == "signed"
    assert case_count(app) == 1


def test_signed_message_id_alone_is_proof_even_if_never_stored(app: App) -> None:
    case = open_case(app)
    # A fresh signed ID emaild never recorded (an agent reply sent elsewhere).
    unrecorded = signer(app).message_id(case)
    result = ingest(app, mail(mid="<r2@customer.test>", references=[unrecorded]))
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    assert via(app, result) == "references"


def test_references_to_a_stored_customer_message_threads(app: App) -> None:
    case = open_case(app)
    reply = mail(
        mid="<r3@customer.test>",
        subject="forgot the attachment",
        references=["<unknown@elsewhere.test>", "<m1@customer.test>"],
    )
    result = ingest(app, reply)
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    entry = trace(app, result.message_row_id)[0]
    assert (entry["via"], entry["how"], entry["message_id"]) == (
        "references",
        "stored",
        "<m1@customer.test>",
    )


def test_queued_mail_under_a_rotated_secret_still_threads_by_lookup(app: App) -> None:
    case = open_case(app)
    old = CaseSigner(secret=b"the-secret-before-rotation", domain=signer(app).domain)
    ours = send(app, case, message_id=old.message_id(case))
    result = ingest(app, mail(mid="<r4@customer.test>", in_reply_to=ours["Message-ID"]))
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    assert trace(app, result.message_row_id)[0]["how"] == "stored"


def test_references_to_unknown_messages_open_a_new_case(app: App) -> None:
    case = open_case(app)
    reply = mail(
        mid="<r5@customer.test>",
        in_reply_to="<never-seen@elsewhere.test>",
        references=["<also-unknown@elsewhere.test>"],
    )
    result = ingest(app, reply)
    assert result.outcome is Outcome.NEW_CASE
    assert result.case_number != case
    entry = trace(app, result.message_row_id)[0]
    assert entry["decision"] == "new case"
    assert "name no known message" in " ".join(entry["refused"])


@pytest.mark.parametrize("tamper", ["case number", "signature", "nonce"])
def test_forged_or_altered_emaild_message_id_is_refused(app: App, tamper: str) -> None:
    case = open_case(app)
    other = open_case(app, mail(mid="<other@else.test>", frm="eve@else.test"))
    genuine = signer(app).message_id(other)
    local, domain = genuine.strip("<>").split("@")
    prefix, number, nonce, mac = local.split(".")
    if tamper == "case number":
        number = str(case)  # point someone else's signed ID at the victim's case
    elif tamper == "signature":
        mac = ("0" if mac[0] != "0" else "1") + mac[1:]
    else:
        nonce = "aaaaaaaaaaaa"
    forged = f"<{prefix}.{number}.{nonce}.{mac}@{domain}>"
    result = ingest(app, mail(mid="<r6@else.test>", frm="eve@else.test", in_reply_to=forged))
    assert result.outcome is Outcome.NEW_CASE
    assert result.case_number not in (case, other)
    refused = " ".join(trace(app, result.message_row_id)[0]["refused"])
    assert "signature fails" in refused


# --- step 2: signed tokens ------------------------------------------------------
def test_body_token_threads_a_reply_that_lost_headers_and_subject(app: App) -> None:
    case = open_case(app)
    token = signer(app).token(case)
    body = f"New question about my printer.\n\n{quote('ref:' + token + ':ref')}"
    result = ingest(app, mail(mid="<r7@x.test>", subject="Q", body=body))
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    assert via(app, result) == "body token"


def test_subject_token_with_signed_part_threads(make_config: Any) -> None:
    config = make_config('[threading]\nsubject_token_format = "[Case #{number:08d} {token}]"\n')
    app = App.open(config)
    try:
        case = open_case(app)
        tag = signer(app).subject_token(case)
        assert tag.startswith(f"[Case #{case:08d} {case}.thread.")
        # No headers: the signature alone is the proof (of the thread; the sender
        # is the customer, a stranger would get a linked case: test_strangers.py).
        raw = mail(mid="<r8@x.test>", subject=f"RE: {tag} follow-up")
        result = ingest(app, raw)
        assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
        assert via(app, result) == "subject token"
    finally:
        app.close()


@pytest.mark.parametrize("where", ["subject", "body"])
def test_altered_token_is_refused(app: App, where: str) -> None:
    victim = open_case(app)
    other = open_case(app, mail(mid="<o1@else.test>", frm="eve@else.test"))
    genuine = signer(app).token(other)
    altered = f"{victim}{genuine[len(str(other)) :]}"  # same signature, victim's number
    assert signer(app).verify(altered) is None
    subject = f"Re: ref:{altered}:ref" if where == "subject" else "Hello"
    body = f"ref:{altered}:ref" if where == "body" else "Hello"
    result = ingest(
        app, mail(mid="<r9@else.test>", frm="eve@else.test", subject=subject, body=body)
    )
    assert result.outcome is Outcome.NEW_CASE
    assert result.case_number not in (victim, other)
    refused = " ".join(trace(app, result.message_row_id)[0]["refused"])
    assert f"{where} token {altered} fails its signature" in refused


# --- step 3: a bare case number -------------------------------------------------
@pytest.mark.parametrize("sender", ["alice@customer.test", "bob@customer.test"])
def test_case_number_from_a_participant_threads(app: App, sender: str) -> None:
    case = open_case(app)  # alice wrote it, bob was cc'd
    assert {"alice@customer.test", "bob@customer.test"} <= participants(app, case)
    subject = f"AW: {signer(app).subject_token(case)} one more thing"
    result = ingest(app, mail(mid=f"<n-{sender}>", frm=sender, subject=subject))
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    assert via(app, result) == "case number"


def test_case_number_from_a_stranger_opens_a_new_case_that_records_it(app: App) -> None:
    case = open_case(app)
    subject = f"Re: [Case #{case:08d}] your printer"
    result = ingest(app, mail(mid="<s1@spam.test>", frm="mallory@spam.test", subject=subject))
    assert result.outcome is Outcome.NEW_CASE
    new = case_row(app, result.case_number)
    assert new.mentioned_number == case
    assert new.subject == "your printer"  # display subject: prefix and tag gone
    entry = trace(app, result.message_row_id)[0]
    assert entry["mentioned_number"] == case
    assert "mallory@spam.test is not on it" in " ".join(entry["refused"])


def test_case_number_of_a_case_that_does_not_exist(app: App) -> None:
    result = ingest(app, mail(mid="<s2@customer.test>", subject="[Case #00004711] hello"))
    assert result.outcome is Outcome.NEW_CASE
    assert case_row(app, result.case_number).mentioned_number == 4711


# --- step 4: Outlook Thread-Index ----------------------------------------------
def test_outlook_thread_index_threads(app: App) -> None:
    root = bytes(range(22))
    case = open_case(
        app, mail(mid="<o-1@corp.test>", headers=[("Thread-Index", thread_index(root))])
    )
    follow_up = mail(
        mid="<o-2@corp.test>",
        subject="Printer",  # Outlook dropped Re: and all references
        headers=[("Thread-Index", thread_index(root, children=2))],
    )
    result = ingest(app, follow_up)
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    assert via(app, result) == "thread-index"


def test_unknown_thread_index_opens_a_new_case(app: App) -> None:
    open_case(app, mail(mid="<o-3@corp.test>", headers=[("Thread-Index", thread_index(bytes(22)))]))
    other = mail(mid="<o-4@corp.test>", headers=[("Thread-Index", thread_index(b"\x01" * 22, 1))])
    assert ingest(app, other).outcome is Outcome.NEW_CASE


# --- step 5 and the order -------------------------------------------------------
def dsn(original_headers: str, *, mid: str = "<dsn-1@mx.customer.test>") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.customer.test\r\n"
        "To: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: {mid}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\nI could not deliver it.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        "Final-Recipient: rfc822; gone@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{original_headers}\r\n--B--\r\n"
    ).encode()


def test_bounce_threads_by_the_original_it_carries(app: App) -> None:
    case = open_case(app)
    ours = send(app, case, to="gone@customer.test")
    headers = f"From: {SUPPORT}\r\nTo: gone@customer.test\r\nMessage-ID: {ours['Message-ID']}\r\n"
    result = ingest(app, dsn(headers))
    assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
    assert via(app, result) == "bounce original"


def test_bounce_carrying_an_unknown_original_is_not_threaded(app: App) -> None:
    case = open_case(app)
    result = ingest(app, dsn("From: someone@else.test\r\nMessage-ID: <not-ours@else.test>\r\n"))
    # Threading says "new case"; the shipped rules then keep it without one.
    assert result.outcome in (Outcome.NEW_CASE, Outcome.DROPPED)
    assert result.case_number != case
    entry = trace(app, result.message_row_id)[0]
    assert entry["decision"] == "new case"
    assert entry["refused"] == ["report carries unknown original <not-ours@else.test>"]


def test_forwarded_message_is_not_a_bounce(app: App) -> None:
    """Only reports thread by an embedded original; a customer forwarding mail does not."""
    case = open_case(app)
    ours = send(app, case)
    forward = (
        "From: dave@else.test\r\nTo: support@example.com\r\nSubject: Fwd: look\r\n"
        "Message-ID: <fwd@else.test>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        "--F\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: {SUPPORT}\r\nMessage-ID: {ours['Message-ID']}\r\nSubject: x\r\n\r\nbody\r\n"
        "--F--\r\n"
    ).encode()
    assert ingest(app, forward).outcome is Outcome.NEW_CASE


def test_first_hit_wins_and_refused_evidence_is_traced(app: App) -> None:
    a = open_case(app)
    b = open_case(app, mail(mid="<b1@customer.test>", frm="alice@customer.test", subject="Other"))
    token_b = signer(app).token(b)
    raw = mail(
        mid="<order@customer.test>",
        subject=f"Re: [Case #{b:08d}]",
        in_reply_to="<m1@customer.test>",  # step 1 -> a
        body=f"ref:{token_b}:ref",  # step 2 would say b
    )
    result = ingest(app, raw)
    assert (result.case_number, via(app, result)) == (a, "in-reply-to")


# --- closed cases ------------------------------------------------------------
def reply_to(app: App, case: int, n: int, **kw: Any) -> bytes:
    return mail(mid=f"<late-{n}@customer.test>", in_reply_to="<m1@customer.test>", **kw)


def routing_config(make_app: Any, policy: str, days: int = 30) -> App:
    toml = f'[[address]]\naddress = "{SUPPORT}"\nclosed_case = "{policy}"\nreopen_days = {days}\n'
    return make_app(toml)


def decisions(app: App, row: int | None) -> list[str]:
    return [d["decision"] for d in trace(app, row)]


def test_reopen_policy_reopens(make_app: Any) -> None:
    app = routing_config(make_app, "reopen")
    try:
        case = open_case(app)
        close_case(app, case, datetime.now(UTC) - timedelta(days=400))
        result = ingest(app, reply_to(app, case, 1))
        assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
        assert case_row(app, case).status == "open"
        assert case_row(app, case).closed_at is None
        assert decisions(app, result.message_row_id) == ["threaded", "reopened"]
    finally:
        app.close()


def test_reopen_within_days_else_a_linked_case_then_follow_it(make_app: Any) -> None:
    app = routing_config(make_app, "reopen_within", days=10)
    try:
        case = open_case(app)
        close_case(app, case, datetime.now(UTC) - timedelta(days=9))
        recent = ingest(app, reply_to(app, case, 1))
        assert (recent.case_number, case_row(app, case).status) == (case, "open")

        close_case(app, case, datetime.now(UTC) - timedelta(days=11))
        late = ingest(app, reply_to(app, case, 2, subject="Re: [Case #00000001] Printer"))
        assert late.outcome is Outcome.NEW_CASE
        linked = case_row(app, late.case_number)
        assert linked.linked_case_id == case
        assert linked.subject == "Printer"
        assert case_row(app, case).status == "closed"
        assert decisions(app, late.message_row_id) == ["threaded", "new linked case"]

        # A second late reply to the old thread joins the follow-up, not a third case.
        again = ingest(app, reply_to(app, case, 3))
        assert (again.outcome, again.case_number) == (Outcome.APPENDED, late.case_number)
        assert decisions(app, again.message_row_id) == ["threaded", "followed link"]
        assert case_count(app) == 2
    finally:
        app.close()


def test_new_linked_policy_never_reopens(make_app: Any) -> None:
    app = routing_config(make_app, "new_linked")
    try:
        case = open_case(app)
        close_case(app, case)  # closed a moment ago: still not reopened
        result = ingest(app, reply_to(app, case, 1))
        assert result.outcome is Outcome.NEW_CASE
        assert case_row(app, result.case_number).linked_case_id == case
        assert case_row(app, case).status == "closed"
    finally:
        app.close()


@pytest.mark.parametrize(
    "headers",
    [
        [("Auto-Submitted", "auto-replied")],
        [("X-Autoreply", "yes")],
    ],
)
def test_auto_replies_never_reopen(make_app: Any, headers: list[tuple[str, str]]) -> None:
    app = routing_config(make_app, "reopen")
    try:
        case = open_case(app)
        close_case(app, case)
        raw = reply_to(app, case, 1, subject="Out of office", headers=headers)
        result = ingest(app, raw)
        assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
        assert case_row(app, case).status == "closed"
        assert decisions(app, result.message_row_id) == ["threaded", "kept closed"]
    finally:
        app.close()


def test_bounce_to_a_closed_case_is_appended_without_reopening(make_app: Any) -> None:
    app = routing_config(make_app, "reopen")
    try:
        case = open_case(app)
        ours = send(app, case, to="gone@customer.test")
        close_case(app, case)
        result = ingest(app, dsn(f"Message-ID: {ours['Message-ID']}\r\nSubject: x\r\n"))
        assert (result.outcome, result.case_number) == (Outcome.APPENDED, case)
        assert case_row(app, case).status == "closed"
    finally:
        app.close()


# --- what is stored and shown -----------------------------------------------
def test_new_text_and_full_body_are_both_stored(app: App) -> None:
    case = open_case(app)
    body = "Thanks, that fixed it.\n\n-- \nAlice Example\nCustomer Inc.\n\n" + quote(
        "Please restart the printer."
    )
    result = ingest(
        app, mail(mid="<nt@customer.test>", in_reply_to="<m1@customer.test>", body=body)
    )
    assert result.case_number == case
    with app.db.session() as s:
        row = s.get(Message, result.message_row_id)
        assert row is not None
        assert row.new_text == "Thanks, that fixed it."
        assert "Please restart the printer." in row.text


def test_cases_show_json_subject_token_is_what_outgoing_mail_uses(
    run_cli: Any, cli_env: dict[str, str], tmp_path: Any
) -> None:
    raw = mail(mid="<cli@customer.test>")
    assert run_cli("ingest", input=raw).returncode == 0
    shown = json.loads(run_cli("cases", "show", "1", "--json").stdout)
    assert shown["subject_token"] == "[Case #00000001]"

    conf = tmp_path / "token.toml"
    conf.write_text('[threading]\nsubject_token_format = "[#{number} {token}]"\n')
    env = {"EMAILD_CONFIG": str(conf)}
    shown = json.loads(run_cli("cases", "show", "1", "--json", env=env).stdout)
    from emaild.config import load_config

    config = load_config(conf, {**cli_env, **env})
    expected = load_signer(config).subject_token(1)
    assert shown["subject_token"] == expected
    assert expected.startswith("[#1 1.thread.")
    assert load_signer(config).subject_numbers(f"Re: {expected} x") == [1]


def test_two_late_replies_at_once_open_one_follow_up(make_app: Any) -> None:
    """The first reply's transaction is held open just before commit while the
    second runs: the second must wait for it and join its follow-up case."""
    app = routing_config(make_app, "new_linked")
    try:
        case = open_case(app)
        close_case(app, case)
        holding, results = threading.Event(), {}

        def hold(_session: Any) -> None:
            holding.set()
            time.sleep(1.0)  # the second reply runs meanwhile (or waits for us)

        def first() -> None:
            results[1] = app.pipeline.ingest(reply_to(app, case, 1), Envelope(), also=hold)

        worker = threading.Thread(target=first)
        worker.start()
        assert holding.wait(30)
        results[2] = ingest(app, reply_to(app, case, 2))
        worker.join(30)
        assert results[1].outcome is Outcome.NEW_CASE
        assert (results[2].outcome, results[2].case_number) == (
            Outcome.APPENDED,
            results[1].case_number,
        )
        assert case_count(app) == 2
    finally:
        app.close()
