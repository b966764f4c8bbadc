"""``deduplicate``: a message already stored is recognised before anything is written."""

from __future__ import annotations

from typing import Any

from mailbuilder import build_mail
from stagerun import run_until

from emaild.intake import Envelope, Outcome


def test_the_same_message_id_is_a_duplicate_of_the_stored_row(stages_app: Any) -> None:
    first = stages_app.pipeline.ingest(build_mail(message_id="<d1@x.test>"), Envelope("test"))
    # Other bytes, same Message-ID (an SMTP retry through another relay adds headers).
    again = build_mail(message_id="<d1@x.test>", headers="Received: from relay2\r\n")
    ctx = run_until(stages_app, again, "deduplicate")
    assert ctx.duplicate and ctx.outcome is Outcome.DUPLICATE
    assert ctx.message is not None and ctx.message.id == first.message_row_id
    assert ctx.case is not None and ctx.case.id == first.case_number


def test_without_a_message_id_the_bytes_decide(stages_app: Any) -> None:
    raw = b"From: a@x.test\r\nTo: support@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    stages_app.pipeline.ingest(raw, Envelope("test"))
    assert run_until(stages_app, raw, "deduplicate").duplicate
    assert not run_until(stages_app, raw.replace(b"body", b"other"), "deduplicate").duplicate


def test_a_new_message_goes_on(stages_app: Any) -> None:
    stages_app.pipeline.ingest(build_mail(message_id="<d2@x.test>"), Envelope("test"))
    ctx = run_until(stages_app, build_mail(message_id="<d3@x.test>"), "deduplicate")
    assert not ctx.duplicate and not ctx.stopped
    assert [d for d in ctx.trace if d.stage == "deduplicate"] == []
