"""``loopdetect``: the Nth identical message within the window opens no case of its own."""

from __future__ import annotations

from typing import Any

from mailbuilder import build_mail
from stagerun import run_until

from emaild.intake import Envelope, Outcome
from emaild.store.models import Case


def robot(n: int) -> bytes:
    # Same sender, subject and body; only the Message-ID differs, as a looping robot's.
    return build_mail(sender="robot@loop.test", subject="Ping", message_id=f"<p{n}@loop.test>")


def test_below_the_threshold_nothing_happens(make_app: Any) -> None:
    app = make_app("[autoresponse]\nloop_threshold = 3\n")
    app.pipeline.ingest(robot(1), Envelope("test"))
    ctx = run_until(app, robot(2), "loopdetect")
    assert ctx.loop == "" and ctx.case is None
    assert ctx.fingerprint  # recorded for the persist stage either way


def test_at_the_threshold_the_message_joins_the_newest_case_and_counts(make_app: Any) -> None:
    app = make_app("[autoresponse]\nloop_threshold = 3\n")
    first = app.pipeline.ingest(robot(1), Envelope("test"))
    second = app.pipeline.ingest(robot(2), Envelope("test"))
    assert first.outcome is second.outcome is Outcome.NEW_CASE
    ctx = run_until(app, robot(3), "loopdetect")
    assert ctx.loop.startswith("loop: 3 messages with the same sender, subject and body")
    assert ctx.case is not None and ctx.case.id == second.case_number
    assert any(d.decision == "loop: no new case" for d in ctx.trace)
    with app.db.session() as session:
        case = session.get(Case, second.case_number)
        assert case is not None and case.loop_count == 1


def test_a_different_body_is_not_the_same_loop(make_app: Any) -> None:
    app = make_app("[autoresponse]\nloop_threshold = 2\n")
    app.pipeline.ingest(robot(1), Envelope("test"))
    other = build_mail(sender="robot@loop.test", subject="Ping", message_id="<o@x>", body="Pong")
    assert run_until(app, other, "loopdetect").loop == ""
