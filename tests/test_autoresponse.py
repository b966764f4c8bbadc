"""Auto-responses end to end: pipeline -> outbox -> real SMTP relay -> reply threads back.

Every test runs on SQLite and PostgreSQL and delivers through a real aiosmtpd
relay on loopback (``relay_sink``).
"""

from __future__ import annotations

import email.policy
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_mail
from sqlalchemy import func, select

from emaild.app import App
from emaild.classify import LOOP_HEADER
from emaild.outbox import deliver_due
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Case, Message, OutboxItem, SuppressedRecipient

CUSTOMER = "alice@customer.test"


def mail(
    *,
    subject: str = "Printer on fire",
    body: str = "It is on fire.",
    sender: str = f"Alice Example <{CUSTOMER}>",
    to: str = "Example Support <support@example.com>",
    message_id: str = "<m1@customer.test>",
    extra: str = "",
) -> bytes:
    """A small customer message; ``extra`` is more header lines ("Name: value\\r\\n")."""
    return build_mail(
        sender=sender,
        to=to,
        subject=subject,
        message_id=message_id,
        date="Mon, 23 Nov 2026 09:00:00 +0000",
        headers=extra,
        body=body,
    )


@pytest.fixture
def relay_app(make_config: Any, relay_sink: Any, tmp_path: Path) -> Any:
    """An App whose relay is the test's sink (through EMAILD_SMTP_RELAY), no STARTTLS.

    ``rules=False`` runs without the shipped rules, so the auto-responder's own
    loop protection is what is tested (the rules drop most machine mail first).
    """
    apps: list[App] = []
    no_rules = tmp_path / "no-rules"
    no_rules.mkdir()

    def build(toml: str = "", *, rules: bool = True, **env: str) -> App:
        text = '[relay]\nstarttls = "off"\nretry_base_seconds = 60.0\n' + toml
        if not rules:
            env["EMAILD_RULES_DIR"] = str(no_rules)
        config = make_config(text, **relay_sink.relay_env, **env)
        app = App.open(config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.close()


def outbox(app: App) -> list[OutboxItem]:
    with app.db.session() as s:
        return list(s.scalars(select(OutboxItem).order_by(OutboxItem.id)))


def trace_reasons(app: App, message_id: str) -> list[str]:
    with app.db.session() as s:
        row = s.scalars(select(Message).where(Message.message_id == message_id)).one()
        return [
            d.get("reason", d["decision"])
            for d in row.decision_trace
            if d["stage"] == "autorespond"
        ]


def test_new_case_gets_exactly_one_autoresponse_and_the_reply_threads_back(
    relay_app: Any, relay_sink: Any
) -> None:
    app = relay_app()
    first = app.pipeline.ingest(mail(), Envelope(channel="test"))
    assert first.outcome is Outcome.NEW_CASE
    # Queued in the same transaction as the case: visible as soon as ingest returns.
    [item] = outbox(app)
    assert (item.status, item.case_id, item.rcpt_to) == ("queued", first.case_number, CUSTOMER)
    # The same message again (an SMTP retry) is a duplicate: no second response.
    assert app.pipeline.ingest(mail(), Envelope(channel="test")).outcome is Outcome.DUPLICATE
    assert len(outbox(app)) == 1

    report = deliver_due(app)
    assert report.sent == [item.id]
    [got] = relay_sink.wait_for(1)
    assert got.mail_from == "support@example.com"
    assert got.rcpt_tos == (CUSTOMER,)
    msg = got.message()
    token = f"[Case #{first.case_number:08d}]"
    assert msg["From"] == "Example Support <support@example.com>"
    assert msg["Reply-To"] == "Example Support <support@example.com>"
    assert msg["To"] == f"Alice Example <{CUSTOMER}>"
    assert token in msg["Subject"] and "Printer on fire" in msg["Subject"]
    assert msg["In-Reply-To"] == "<m1@customer.test>"
    assert msg["References"] == "<m1@customer.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg[LOOP_HEADER] == "support@example.com"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text = msg.get_body(("plain",))
    assert text is not None and f"{first.case_number:08d}" in text.get_content()
    signer = app.services.signer
    our_id = str(msg["Message-ID"])
    assert signer.case_from_message_id(our_id) == first.case_number
    assert item.message_id == our_id

    # The sent message is on the case, outbound, with its raw bytes in the blob store.
    with app.db.session() as s:
        out = s.scalars(select(Message).where(Message.direction == "out")).one()
        assert (out.case_id, out.message_id, out.dedup_key) == (
            first.case_number,
            our_id,
            f"mid:{our_id}",
        )
        assert app.blobs.read(out.raw_sha256) == got.data.replace(b"\r\n", b"\n").replace(
            b"\n", b"\r\n"
        )
        case = s.get(Case, first.case_number)
        assert case is not None and case.auto_responses == 1
    assert [i.status for i in outbox(app)] == ["sent"]

    # The customer answers the auto-response: In-Reply-To names our signed Message-ID.
    reply = mail(
        subject=f"Re: {msg['Subject']}",
        body="More details: it is still burning.",
        message_id="<m2@customer.test>",
        extra=f"In-Reply-To: {our_id}\r\nReferences: <m1@customer.test> {our_id}\r\n",
    )
    second = app.pipeline.ingest(reply, Envelope(channel="test"))
    assert second.outcome is Outcome.APPENDED
    assert second.case_number == first.case_number
    assert trace_reasons(app, "<m2@customer.test>") == [
        "not a new case (appended): only new cases are answered"
    ]
    assert len(outbox(app)) == 1
    assert deliver_due(app).attempted == 0
    assert len(relay_sink.received()) == 1


def test_hide_record_information_template_sends_a_generic_acknowledgement(
    relay_app: Any, relay_sink: Any
) -> None:
    app = relay_app(
        '[[address]]\naddress = "support@example.com"\nname = "Example Support"\n'
        'auto_response = "acknowledgement"\n'
    )
    result = app.pipeline.ingest(mail(subject="Secret project X"), Envelope(channel="test"))
    deliver_due(app)
    [got] = relay_sink.wait_for(1)
    msg = got.message()
    number = f"{result.case_number:08d}"
    assert msg["Subject"] == "We received your message"
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content()
    assert number not in body and "Secret project" not in body and "Case #" not in body
    # It still threads: the Message-ID is signed for the case, under the routing
    # address's domain (not the host's, which is often "localhost").
    assert app.services.signer.case_from_message_id(str(msg["Message-ID"])) == int(number)
    assert str(msg["Message-ID"]).endswith("@example.com>")


def test_customer_fields_cannot_inject_headers_and_are_rfc2047_encoded(
    relay_app: Any, relay_sink: Any
) -> None:
    app = relay_app('[[address]]\naddress = "support@example.com"\nname = "Süpport"\n')
    evil = mail(
        # Folded header values that decode to CR/LF-bearing text and non-ASCII.
        sender="=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jurgen@customer.test>",
        subject="=?utf-8?q?Gr=C3=BC=C3=9Fe=0D=0ABcc=3A_victim=40evil=2Etest?=",
        message_id="<m3@customer.test>",
        extra="X-Note: =?utf-8?q?x=0D=0AX-Injected=3A_yes?=\r\n",
    )
    app.pipeline.ingest(evil, Envelope(channel="test"))
    deliver_due(app)
    [got] = relay_sink.wait_for(1)
    assert got.rcpt_tos == ("jurgen@customer.test",)
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # every non-ASCII header is RFC 2047 encoded
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] != b" "]
    assert b"bcc" not in names and b"x-injected" not in names
    assert names.count(b"to") == 1 and names.count(b"subject") == 1
    msg = got.message()
    assert "Grüße Bcc: victim@evil.test" in msg["Subject"]  # one line, harmless text
    assert msg["From"].addresses[0].display_name == "Süpport"
    assert msg["To"].addresses[0].addr_spec == "jurgen@customer.test"
    assert msg["To"].addresses[0].display_name == "Jürgen Müller"


def loop_protection_cases() -> list[tuple[str, bytes, dict[str, str], str]]:
    """(id, message, envelope kwargs, expected reason fragment)."""
    return [
        ("auto-submitted", mail(extra="Auto-Submitted: auto-generated\r\n"), {}, "Auto-Submitted"),
        ("precedence", mail(extra="Precedence: bulk\r\n"), {}, "Precedence: bulk"),
        ("list-id", mail(extra="List-Id: <x.lists.test>\r\n"), {}, "list-id"),
        (
            "list-unsubscribe",
            mail(extra="List-Unsubscribe: <mailto:u@lists.test>\r\n"),
            {},
            "list-unsubscribe",
        ),
        (
            "suppress",
            mail(extra="X-Auto-Response-Suppress: OOF, AutoReply\r\n"),
            {},
            "X-Auto-Response-Suppress",
        ),
        ("x-loop", mail(extra="X-Loop: helpdesk@other.test\r\n"), {}, "X-Loop"),
        ("our-loop", mail(extra=f"{LOOP_HEADER}: support@example.com\r\n"), {}, LOOP_HEADER),
        ("mailer-daemon", mail(sender="MAILER-DAEMON@mx.customer.test"), {}, "mailer-daemon"),
        ("noreply", mail(sender="No Reply <no-reply@customer.test>"), {}, "no-reply"),
        ("null-return-path", mail(extra="Return-Path: <>\r\n"), {}, "null return path"),
        (
            "null-envelope",
            mail(),
            {"channel": "smtp", "mail_from": ""},
            "null return path",
        ),
        ("vacation", mail(subject="Out of Office: back Monday"), {}, "auto-reply subject"),
        (
            "own-address",
            mail(sender="Support <support@example.com>"),
            {},
            "one of our own routing addresses",
        ),
        (
            "reply-to-own",
            mail(extra="Reply-To: support@example.com\r\n"),
            {},
            "one of our own routing addresses",
        ),
        ("bcc", mail(to="someone@elsewhere.test"), {}, "none of our addresses is in To/Cc"),
        (
            "dsn",
            (
                b"From: Mail Delivery System <MAILER-DAEMON@mx.test>\r\n"
                b"To: support@example.com\r\nSubject: Undelivered Mail\r\n"
                b"Message-ID: <dsn1@mx.test>\r\nMIME-Version: 1.0\r\n"
                b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
                b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
                b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
                b"Reporting-MTA: dns; mx.test\r\n\r\nFinal-Recipient: rfc822; x@y.test\r\n"
                b"Action: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
            ),
            {},
            "delivery status notification",
        ),
    ]


@pytest.mark.parametrize(
    ("raw", "envelope", "reason"),
    [pytest.param(raw, env, why, id=name) for name, raw, env, why in loop_protection_cases()],
)
def test_loop_protection_refuses_and_records_the_reason(
    relay_app: Any, raw: bytes, envelope: dict[str, str], reason: str
) -> None:
    app = relay_app(rules=False)
    app.pipeline.ingest(raw, Envelope(**envelope))
    assert outbox(app) == []
    message_id = message_from_bytes(raw)["Message-ID"]
    reasons = trace_reasons(app, message_id)
    assert len(reasons) == 1 and reason.lower() in reasons[0].lower(), reasons


def test_a_plain_customer_message_is_answered(relay_app: Any) -> None:
    """The control for the test above: without those markers the same mail is answered."""
    app = relay_app()
    app.pipeline.ingest(mail(), Envelope(channel="smtp", mail_from=CUSTOMER))
    assert [i.rcpt_to for i in outbox(app)] == [CUSTOMER]


def test_suppressed_recipient_gets_nothing(relay_app: Any) -> None:
    app = relay_app()

    def suppress(s: Any) -> None:
        from emaild.outbox.queue import suppress

        suppress(s, CUSTOMER, "550 5.1.1 no such user", app.pipeline.clock())

    app.db.run(suppress)
    app.pipeline.ingest(mail(), Envelope())
    assert outbox(app) == []
    assert "marked undeliverable" in trace_reasons(app, "<m1@customer.test>")[0]


def test_per_recipient_rate_limit(relay_app: Any) -> None:
    app = relay_app("[autoresponse]\nper_recipient_limit = 2\nper_recipient_window_minutes = 60\n")
    for n in range(4):
        raw = mail(subject=f"Question {n}", body=f"Body {n}", message_id=f"<q{n}@customer.test>")
        assert app.pipeline.ingest(raw, Envelope()).outcome is Outcome.NEW_CASE
    assert len(outbox(app)) == 2
    assert trace_reasons(app, "<q3@customer.test>") == [
        f"rate limit: 2 auto-responses to {CUSTOMER} in the last 60 min"
    ]


def test_loop_detector_makes_one_case_with_a_counter(relay_app: Any) -> None:
    app = relay_app("[autoresponse]\nloop_threshold = 3\nper_recipient_limit = 100\n")
    outcomes = []
    for n in range(6):
        # Same sender, subject and body; a fresh Message-ID each time (not duplicates).
        raw = mail(subject="Same thing", body="Same body", message_id=f"<loop{n}@customer.test>")
        outcomes.append(app.pipeline.ingest(raw, Envelope()))
    assert [r.outcome for r in outcomes] == [Outcome.NEW_CASE] * 2 + [Outcome.APPENDED] * 4
    with app.db.session() as s:
        cases = list(s.scalars(select(Case).order_by(Case.id)))
        assert len(cases) == 2
        assert [c.loop_count for c in cases] == [0, 4]
        assert {r.case_number for r in outcomes[2:]} == {cases[1].id}
    assert len(outbox(app)) == 2  # the two real new cases; the loop gets none
    with app.db.session() as s:
        row = s.scalars(select(Message).where(Message.message_id == "<loop2@customer.test>")).one()
        [loop] = [d for d in row.decision_trace if d["stage"] == "loopdetect"]
    assert loop["decision"] == "loop: no new case" and loop["count"] == 3
    assert loop["reason"].startswith("loop: 3 messages with the same sender, subject and body")


def test_auto_responses_can_be_switched_off(relay_app: Any) -> None:
    app = relay_app("[autoresponse]\nenabled = false\n")
    app.pipeline.ingest(mail(), Envelope())
    assert outbox(app) == []
    assert "enabled = false" in trace_reasons(app, "<m1@customer.test>")[0]


def test_rule_or_address_without_template_sends_none(relay_app: Any) -> None:
    app = relay_app('[[address]]\naddress = "support@example.com"\nauto_response = ""\n')
    app.pipeline.ingest(mail(), Envelope())
    assert outbox(app) == []
    assert "no template chosen" in trace_reasons(app, "<m1@customer.test>")[0]


def test_outbox_row_rolls_back_with_the_case(relay_app: Any) -> None:
    """A failure after the auto-response is queued leaves neither case nor outbox row."""
    app = relay_app()

    class Boom:
        name = "boom"
        description = "fails after everything else"
        needs_session = True

        def __call__(self, ctx: object) -> None:
            raise RuntimeError("disk on fire")

    app.pipeline.stages = (*app.pipeline.stages, Boom())
    assert app.pipeline.ingest(mail(), Envelope()).outcome is Outcome.QUARANTINED
    with app.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 0
        assert s.scalar(select(func.count()).select_from(OutboxItem)) == 0


def test_body_token_when_enabled(relay_app: Any, relay_sink: Any) -> None:
    app = relay_app("[threading]\nbody_token = true\n")
    result = app.pipeline.ingest(mail(), Envelope())
    deliver_due(app)
    msg = relay_sink.wait_for(1)[0].message()
    assert isinstance(msg, EmailMessage)
    plain = msg.get_body(("plain",))
    assert plain is not None
    found = app.services.signer.find_tokens(plain.get_content())
    assert [t.case_id for t in found] == [result.case_number]
    assert email.policy.default  # the stdlib parsed it with the modern policy


def dsn_for(original: bytes, action: str = "failed") -> bytes:
    """An RFC 3464 bounce from the customer's MTA, carrying our message's header."""
    head = original.split(b"\r\n\r\n", 1)[0]
    return (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>\r\n"
        b"To: support@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce-" + action.encode() + b"@mx.customer.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nMailbox unknown.\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        b"Final-Recipient: rfc822; " + CUSTOMER.encode() + b"\r\n"
        b"Action: " + action.encode() + b"\r\nStatus: 5.1.1\r\n\r\n"
        b"--r\r\nContent-Type: text/rfc822-headers\r\n\r\n" + head + b"\r\n--r--\r\n"
    )


@pytest.mark.parametrize(("action", "suppressed"), [("failed", True), ("delayed", False)])
def test_a_bounce_of_our_auto_response_marks_the_customer_undeliverable(
    relay_app: Any, relay_sink: Any, action: str, suppressed: bool
) -> None:
    app = relay_app()
    first = app.pipeline.ingest(mail(), Envelope())
    deliver_due(app)
    [sent] = relay_sink.wait_for(1)
    bounce = app.pipeline.ingest(dsn_for(sent.data, action), Envelope(channel="test"))
    # The bounce threads onto the case by our signed Message-ID and opens nothing.
    assert bounce.case_number == first.case_number
    with app.db.session() as s:
        assert (s.get(SuppressedRecipient, CUSTOMER) is not None) is suppressed
    later = mail(subject="Another question", message_id="<m9@customer.test>")
    assert app.pipeline.ingest(later, Envelope()).outcome is Outcome.NEW_CASE
    assert len(outbox(app)) == (1 if suppressed else 2)
    if suppressed:
        assert "marked undeliverable: bounce" in trace_reasons(app, "<m9@customer.test>")[0]


def test_a_forged_bounce_for_mail_we_never_sent_suppresses_nobody(relay_app: Any) -> None:
    app = relay_app()
    forged = (
        b"From: Alice <alice@customer.test>\r\nSubject: Re: hi\r\n"
        b"Message-ID: <never-sent@example.com>\r\n"
    )
    app.pipeline.ingest(dsn_for(forged), Envelope(channel="test"))
    with app.db.session() as s:
        assert s.get(SuppressedRecipient, CUSTOMER) is None
