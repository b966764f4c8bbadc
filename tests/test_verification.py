"""Tokens, hold and release through the real pipeline, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mailbuilder import count
from sqlalchemy import select

from emaild.addresses import add_managed, validate_routing
from emaild.app import App
from emaild.errors import InputError
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Case, ManagedAddress, Message, OutboxItem, VerificationToken
from emaild.verification.admin import confirm, request_verification
from emaild.verification.tokens import (
    FORWARDING,
    VERIFY,
    TokenSigner,
    Verdict,
    issue,
    token_hash,
    use,
)

ADDRESS = "help@acme.test"
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def customer_mail(n: int, *, reply_to: int | None = None, to: str = ADDRESS) -> bytes:
    threading_headers = (
        f"In-Reply-To: <q{reply_to}@customer.test>\r\nReferences: <q{reply_to}@customer.test>\r\n"
        if reply_to
        else ""
    )
    subject = f"Re: question {reply_to}" if reply_to else f"question {n}"
    return (
        f"From: Carol Customer <carol@customer.test>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <q{n}@customer.test>\r\n"
        f"{threading_headers}"
        f"Date: Sun, 22 Nov 2026 09:0{n}:00 +0000\r\n"
        f"\r\n"
        f"Message number {n}.\r\n"
    ).encode()


def add_address(app: App, address: str = ADDRESS) -> None:
    routing = validate_routing({"address": address, "name": "Acme Help"})
    app.db.run(lambda s: add_managed(s, app.config, routing, T0))
    app.pipeline.addresses.invalidate()


def queued_verification(app: App) -> tuple[bytes, str]:
    """The raw verification mail in the outbox and the token in its header."""
    with app.db.session() as s:
        item = s.scalars(
            select(OutboxItem).where(OutboxItem.kind == "verification").order_by(OutboxItem.id)
        ).all()[-1]
    parsed = email.message_from_bytes(item.raw, policy=email.policy.default)
    token = str(parsed["X-Emaild-Verify"])
    assert token in parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return item.raw, token


def is_verified(app: App, address: str = ADDRESS) -> bool:
    with app.db.session() as s:
        row = s.get(ManagedAddress, address)
        return row is not None and row.verified_at is not None


# --- tokens ------------------------------------------------------------------------------
def test_a_token_works_once_and_only_for_its_address(app: App) -> None:
    signer = app.services.tokens

    def issue_one(s: Any) -> str:
        token, _ = issue(s, signer, address=ADDRESS, purpose=VERIFY, now=T0, ttl=timedelta(hours=1))
        return token

    token = app.db.run(issue_one)
    with app.db.session() as s:
        stored = s.scalars(select(VerificationToken)).one()
        assert stored.token_hash == token_hash(token)
        assert token not in repr(stored.__dict__), "only the hash is stored"
    soon = T0 + timedelta(minutes=5)
    other = app.db.run(lambda s: use(s, signer, token, now=soon, via="t", address="x@acme.test"))
    assert other.verdict is Verdict.WRONG_ADDRESS
    wrong_purpose = app.db.run(
        lambda s: use(s, signer, token, now=soon, via="t", purpose=FORWARDING)
    )
    assert wrong_purpose.verdict is Verdict.WRONG_PURPOSE
    first = app.db.run(lambda s: use(s, signer, token.upper(), now=soon, via="t", address=ADDRESS))
    assert first.ok and first.address == ADDRESS
    again = app.db.run(lambda s: use(s, signer, token, now=soon, via="t"))
    assert again.verdict is Verdict.USED and again.genuine


def test_expired_unknown_and_forged_tokens_do_not_verify(app: App) -> None:
    signer = app.services.tokens
    token = app.db.run(
        lambda s: issue(s, signer, address=ADDRESS, purpose=VERIFY, now=T0, ttl=timedelta(hours=1))[
            0
        ]
    )
    late = T0 + timedelta(hours=1, seconds=1)
    assert app.db.run(lambda s: use(s, signer, token, now=late, via="t")).verdict is Verdict.EXPIRED
    # A token signed with another secret (another installation, or a guess).
    stranger = TokenSigner(b"not our secret, not our tokens").make(VERIFY, ADDRESS)
    assert app.db.run(lambda s: use(s, signer, stranger, now=T0, via="t")).verdict is (
        Verdict.UNKNOWN
    )
    # Someone who can write the table plants the hash of their own token: the
    # signature still gives it away.
    app.db.run(
        lambda s: s.add(
            VerificationToken(
                address=ADDRESS,
                purpose=VERIFY,
                token_hash=token_hash(stranger),
                created_at=T0,
                expires_at=T0 + timedelta(days=1),
            )
        )
    )
    assert app.db.run(lambda s: use(s, signer, stranger, now=T0, via="t")).verdict is (
        Verdict.FORGED
    )
    assert app.db.run(lambda s: use(s, signer, "emaild-verify-zz", now=T0, via="t")).verdict is (
        Verdict.MALFORMED
    )


def test_two_channels_racing_for_one_token_use_it_once(app: App) -> None:
    signer = app.services.tokens
    token = app.db.run(
        lambda s: issue(s, signer, address=ADDRESS, purpose=VERIFY, now=T0, ttl=timedelta(hours=1))[
            0
        ]
    )
    barrier = threading.Barrier(4)
    verdicts: list[Verdict] = []

    def worker(via: str) -> None:
        barrier.wait()
        check = app.db.run(lambda s: use(s, signer, token, now=T0, via=via), attempts=5)
        verdicts.append(check.verdict)

    threads = [threading.Thread(target=worker, args=(f"ch{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(v.value for v in verdicts) == ["already used"] * 3 + ["valid"]


# --- hold and release ----------------------------------------------------------------------
def test_mail_to_an_unverified_address_is_held_then_released_in_order(app: App) -> None:
    add_address(app)
    ingest = app.pipeline.ingest
    results = [
        ingest(
            customer_mail(1),
            Envelope(channel="smtp", mail_from="carol@customer.test", rcpt_to=(ADDRESS,)),
        ),
        ingest(
            customer_mail(2, reply_to=1),
            Envelope(channel="smtp", mail_from="carol@customer.test", rcpt_to=(ADDRESS,)),
        ),
        ingest(customer_mail(3), Envelope(channel="imap")),
    ]
    assert [r.outcome for r in results] == [Outcome.HELD] * 3
    assert all(r.case_number is None for r in results)
    # The same mail again while held: a duplicate, not a second row.
    again = ingest(customer_mail(1), Envelope(channel="imap"))
    assert again.outcome is Outcome.DUPLICATE
    assert count(app, Case) == 0
    assert count(app, Message, Message.state == "held") == 3
    assert count(app, OutboxItem, OutboxItem.kind != "verification") == 0, "no auto-response"
    with app.db.session() as s:
        held_at = {r[0]: r[1] for r in s.execute(select(Message.message_id, Message.received_at))}

    request_verification(app, ADDRESS)
    raw, _token = queued_verification(app)
    # The verification mail comes back through a channel: verified, never a case.
    result = ingest(
        raw, Envelope(channel="smtp", mail_from="carol@customer.test", rcpt_to=(ADDRESS,))
    )
    assert result.outcome is Outcome.DROPPED
    assert result.case_number is None
    assert "verification message" in result.detail
    assert is_verified(app)

    # Released by the verification itself: exactly one case per question, in
    # arrival order, the reply threaded onto the case its question opened.
    assert count(app, Message, Message.state == "held") == 0
    with app.db.session() as s:
        rows = s.execute(
            select(Message.message_id, Message.case_id, Message.received_at, Message.state)
            .where(Message.message_id.like("<q%"))
            .order_by(Message.case_id, Message.id)
        ).all()
        cases = s.scalars(select(Case).order_by(Case.id)).all()
    assert [(r.message_id, r.state) for r in rows] == [
        ("<q1@customer.test>", "stored"),
        ("<q2@customer.test>", "stored"),
        ("<q3@customer.test>", "stored"),
    ]
    assert [c.subject for c in cases] == ["question 1", "question 3"]
    assert rows[0].case_id == rows[1].case_id == cases[0].id
    assert rows[2].case_id == cases[1].id
    # The messages keep their arrival time.
    assert {r.message_id: r.received_at for r in rows} == held_at
    # Now, and only now, the customers get their auto-responses (one per new case).
    with app.db.session() as s:
        responses = s.scalars(
            select(OutboxItem.case_id).where(OutboxItem.kind == "autoresponse")
        ).all()
    assert sorted(responses) == [c.id for c in cases]
    # Running a release again finds nothing to do and changes nothing.
    assert app.pipeline.release_held() == []
    assert count(app, Case) == 2


def test_the_verification_mail_arriving_twice_is_one_message_and_no_case(app: App) -> None:
    add_address(app)
    request_verification(app, ADDRESS)
    raw, _ = queued_verification(app)
    first = app.pipeline.ingest(
        raw, Envelope(channel="smtp", mail_from="carol@customer.test", rcpt_to=(ADDRESS,))
    )
    second = app.pipeline.ingest(raw, Envelope(channel="imap"))
    assert first.outcome is Outcome.DROPPED
    assert second.outcome is Outcome.DUPLICATE
    # The admin's reply quotes the token: recognised, used already, not a case.
    reply = (
        b"From: admin@acme.test\r\nTo: help@acme.test\r\nSubject: Re: verify\r\n"
        b"Message-ID: <reply@acme.test>\r\n\r\n> Verification token: "
        + _token_of(raw).encode()
        + b"\r\n"
    )
    third = app.pipeline.ingest(reply, Envelope(channel="pipe"))
    assert third.outcome is Outcome.DROPPED
    assert count(app, Case) == 0
    with app.db.session() as s:
        token = s.scalars(select(VerificationToken)).one()
        assert token.used_via == "smtp"
        stored = s.get(Message, token.message_row_id)
        assert stored is not None and stored.case_id is None
        assert [d["decision"] for d in stored.decision_trace if d["stage"] == "verify"] == [
            "token",
            "address verified",
            "control message",
        ]


def _token_of(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=email.policy.default)["X-Emaild-Verify"])


def test_a_forged_token_in_mail_verifies_nothing_and_the_mail_stays_held(app: App) -> None:
    add_address(app)
    forged = TokenSigner(b"an attacker's own secret key!!").make(VERIFY, ADDRESS)
    raw = (
        f"From: mallory@evil.test\r\nTo: {ADDRESS}\r\nSubject: verify\r\n"
        f"Message-ID: <forged@evil.test>\r\nX-Emaild-Verify: {forged}\r\n\r\n{forged}\r\n"
    ).encode()
    result = app.pipeline.ingest(
        raw, Envelope(channel="smtp", mail_from="carol@customer.test", rcpt_to=(ADDRESS,))
    )
    assert result.outcome is Outcome.HELD
    assert not is_verified(app)
    assert {
        "stage": "verify",
        "decision": "token",
        "purpose": "",
        "address": "",
        "verdict": "unknown",
    } in (list(result.trace))


def test_an_expired_verification_mail_does_not_verify_and_is_no_case(app: App) -> None:
    add_address(app)
    request_verification(app, ADDRESS)
    raw, token = queued_verification(app)
    app.pipeline.services = dataclasses.replace(
        app.services, clock=lambda: datetime.now(UTC) + timedelta(days=30)
    )
    result = app.pipeline.ingest(
        raw, Envelope(channel="smtp", mail_from="carol@customer.test", rcpt_to=(ADDRESS,))
    )
    assert result.outcome is Outcome.DROPPED
    assert "expired" in result.detail
    assert not is_verified(app)
    with pytest.raises(InputError, match="token is expired"):
        confirm(app, ADDRESS, token)
    assert not is_verified(app)
    assert count(app, Case) == 0


def test_confirm_by_hand_verifies_and_releases(app: App) -> None:
    add_address(app)
    app.pipeline.ingest(customer_mail(1), Envelope(channel="pipe", rcpt_to=(ADDRESS,)))
    request_verification(app, ADDRESS)
    _, token = queued_verification(app)
    add_address(app, "other@acme.test")
    with pytest.raises(InputError, match="wrong address"):
        confirm(app, "other@acme.test", token)
    result = confirm(app, ADDRESS, token)
    assert result.newly_verified
    assert [(r.outcome, r.case_number) for r in result.released] == [("new_case", 1)]
    assert is_verified(app)
    assert app.pipeline.addresses.is_verified(ADDRESS)
    with pytest.raises(InputError, match="already used"):
        confirm(app, ADDRESS, token)
    # Mail arriving now goes straight to a case.
    later = app.pipeline.ingest(customer_mail(5), Envelope(channel="pipe", rcpt_to=(ADDRESS,)))
    assert later.outcome is Outcome.NEW_CASE


def test_no_hold_when_the_admin_turns_it_off(make_app: Any) -> None:
    app = make_app("[verification]\nhold_unverified = false\n")
    try:
        add_address(app)
        result = app.pipeline.ingest(customer_mail(1), Envelope(channel="pipe"))
        assert result.outcome is Outcome.NEW_CASE
        assert any(d["stage"] == "verify" and d["decision"] == "not held" for d in result.trace)
    finally:
        app.close()


def test_held_mail_left_behind_by_a_crash_is_released_on_the_next_pass(app: App) -> None:
    add_address(app)
    for n in (1, 2):
        app.pipeline.ingest(customer_mail(n), Envelope(channel="pipe", rcpt_to=(ADDRESS,)))
    # Verified, but the process died before releasing (nothing ran after commit).
    app.db.run(lambda s: setattr(s.get(ManagedAddress, ADDRESS), "verified_at", T0))
    assert count(app, Message, Message.state == "held") == 2
    released = app.pipeline.release_held(limit=1)  # the daemon job's pass, bounded
    assert [(r.outcome, r.case_number) for r in released] == [("new_case", 1)]
    released = app.pipeline.release_held()
    assert [(r.outcome, r.case_number) for r in released] == [("new_case", 2)]
    assert count(app, Message, Message.state == "held") == 0
    assert count(app, Case) == 2
