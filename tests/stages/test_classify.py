"""``classify``: the envelope sender counts on every channel that knows it."""

from __future__ import annotations

from typing import Any

import pytest
from mailbuilder import build_mail
from stagerun import run_until

from emaild.intake import Envelope
from emaild.pipeline.stages.classify import envelope_sender

NOTICE = build_mail(sender="Reports <reports@mx.example.net>", subject="Your message", body="x")


@pytest.mark.parametrize(
    ("envelope", "expected"),
    [
        (Envelope(channel="smtp", mail_from=""), ""),
        (Envelope(channel="lmtp", mail_from="a@b.test"), "a@b.test"),
        (Envelope(channel="pipe", mail_from="<>"), ""),  # emaild ingest --from '<>'
        (Envelope(channel="pipe", mail_from=""), None),  # no --from: unknown
        (Envelope(channel="imap"), None),
        (Envelope(channel="quarantine", mail_from="a@b.test"), "a@b.test"),
    ],
)
def test_envelope_sender(envelope: Envelope, expected: str | None) -> None:
    assert envelope_sender(envelope) == expected


def null_sender(ctx: Any) -> bool:
    assert ctx.classification is not None
    return "null return path" in ctx.classification.no_response_reason()


def test_a_null_sender_through_the_pipe_is_never_answered(stages_app: Any) -> None:
    ctx = run_until(stages_app, NOTICE, "classify", Envelope(channel="pipe", mail_from="<>"))
    assert null_sender(ctx)
    assert not null_sender(run_until(stages_app, NOTICE, "classify", Envelope(channel="pipe")))


def test_a_null_return_path_header_counts_where_the_envelope_is_unknown(stages_app: Any) -> None:
    raw = b"Return-Path: <>\r\n" + NOTICE
    assert null_sender(run_until(stages_app, raw, "classify", Envelope(channel="imap")))
    bounce = raw.replace(b"Subject: Your message", b"Subject: Undelivered Mail Returned to Sender")
    ctx = run_until(stages_app, bounce, "classify", Envelope(channel="imap"))
    assert ctx.classification is not None and ctx.classification.is_bounce
