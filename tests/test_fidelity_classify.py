"""Issue 20, classes 8 and 10: null Return-Path, vendor bounces, the inbox-rules header."""

from __future__ import annotations

import pytest

from emaild.classify import classify
from emaild.mime.parse import parse_message

ORIGINAL = (
    b"From: support@example.com\r\nTo: anna@customer.test\r\nSubject: Your case\r\n"
    b"Message-ID: <case-1@example.com>\r\n\r\nHello Anna\r\n"
)


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    return parse_message(raw, spool_threshold=1 << 20)


BOUNCES = [
    # Null Return-Path from the delivering MTA, bounce subject, From a normal-looking address.
    (
        b"Return-Path: <>\r\nFrom: Mail Gateway <gateway@provider.test>\r\n"
        b"Subject: Delivery failure notification\r\n\r\nYour mail could not be delivered.\r\n",
        "bounce subject",
    ),
    # Vendor notice with the original inline and no DSN part.
    (
        b"From: Postmaster Service <service@provider.test>\r\n"
        b"Subject: Delivery failure notification\r\n\r\nThe message could not be delivered.\r\n\r\n"
        b"------ This is a copy of the message, including all the headers. ------\r\n" + ORIGINAL,
        "original message returned",
    ),
    # "Undelivered Mail Returned to Sender" carrying message/rfc822 without a DSN part.
    (
        b"From: System <system@provider.test>\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
        b"Mailbox full.\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n" + ORIGINAL + b"--b--\r\n",
        "original message returned",
    ),
]


@pytest.mark.parametrize(("raw", "why"), BOUNCES)
def test_non_standard_bounces_are_machine_mail(raw: bytes, why: str) -> None:
    result = classify(parse(raw), None)
    assert result.is_bounce and result.is_auto and why in result.bounce, result.reasons


MODERATION = [
    b"From: support-owner@lists.example.org\r\nSubject: Your message to support awaits "
    b"moderator approval\r\n\r\nheld\r\n",
    b"Return-Path: <>\r\nFrom: Lists <lists@example.org>\r\nSubject: Post to team requires "
    b"approval\r\n\r\nheld\r\n",
    b"From: Admin <admin@example.org>\r\nX-List-Administrivia: yes\r\nSubject: Message held "
    b"for moderation\r\n\r\nheld\r\n",
]


@pytest.mark.parametrize("raw", MODERATION)
def test_list_moderation_notices_are_machine_mail(raw: bytes) -> None:
    result = classify(parse(raw), None)
    assert result.auto_submitted and result.is_auto, result.reasons


def test_null_return_path_is_a_null_sender_like_the_envelope() -> None:
    raw = b"Return-Path: <>\r\nFrom: a@customer.test\r\nSubject: Hello\r\n\r\nx\r\n"
    parsed = parse(raw)
    assert parsed.null_return_path
    for mail_from in (None, ""):
        assert classify(parsed, mail_from).no_reply_sender == "null return path (<>)"
    plain = parse(raw.replace(b"Return-Path: <>\r\n", b"Return-Path: <a@customer.test>\r\n"))
    assert not plain.null_return_path and not classify(plain, None).no_reply_sender


RULE = b"X-MS-Exchange-Inbox-Rules-Loop: anna@customer.test\r\n"


@pytest.mark.parametrize(
    ("raw", "auto"),
    [
        (RULE + b"From: anna@customer.test\r\nSubject: Fwd: my order\r\n\r\nx\r\n", False),
        (RULE + b"From: bob@customer.test\r\nSubject: Question\r\n\r\nx\r\n", False),
        (RULE + b"From: noreply@customer.test\r\nSubject: Question\r\n\r\nx\r\n", True),
        (RULE + b"From: anna@customer.test\r\nSubject: Automatic reply: Q\r\n\r\nx\r\n", True),
        (
            RULE + b"X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent\r\n"
            b"From: anna@customer.test\r\nSubject: Question\r\n\r\nx\r\n",
            True,
        ),
    ],
)
def test_inbox_rules_loop_header_alone_is_a_person(raw: bytes, auto: bool) -> None:
    result = classify(parse(raw), "anna@customer.test")
    assert bool(result.auto_submitted) is auto, result.reasons
