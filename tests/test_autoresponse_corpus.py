"""Zero auto-responses for all 614 files of the sisimai corpus (bounces, ARF, vacation).

Two runs. With the default configuration nothing may be answered, whatever
part of the pipeline stops it. Then the auto-responder's own loop protection
alone (no rules, no To/Cc requirement, every file routed to our address): the
611 machine-generated files must still get nothing, and the three files a
person wrote must be answered, so the test fails if classification stops
telling them apart in either direction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from emaild.app import App
from emaild.outbox import deliver_due
from emaild.pipeline import Envelope, Outcome
from emaild.store.models import Message, OutboxItem

# Written by people, not machines: answering them is right once the To/Cc
# requirement is off. ``lhost-sendmail-14`` is someone forwarding a bounce
# ("Fwd: Returned mail") to themselves; ``not/`` are sisimai's non-bounces.
HUMAN = {
    "bsd/lhost-sendmail-14.eml",
    "not/is-not-bounce-01.eml",
    "not/is-not-bounce-02.eml",
}


def sisimai_files(corpus: Path) -> list[Path]:
    root = corpus / "sisimai" / "maildir"
    files = sorted(p for p in root.rglob("*.eml") if p.is_file())
    assert len(files) == 614, len(files)
    return files


def ingest_all(app: App, files: list[Path], root: Path) -> dict[str, Any]:
    results = {}
    for path in files:
        raw = path.read_bytes()
        # Every file arrives for our routing address, as if the MTA delivered it to us.
        envelope = Envelope(channel="pipe", routing_hint="support@example.com")
        results[str(path.relative_to(root))] = app.pipeline.ingest(raw, envelope)
    return results


def test_default_configuration_answers_none_of_the_corpus(
    make_app: Any, relay_sink: Any, corpus: Path
) -> None:
    app = make_app('[relay]\nstarttls = "off"\n', **relay_sink.relay_env)
    try:
        files = sisimai_files(corpus)
        results = ingest_all(app, files, corpus / "sisimai" / "maildir")
        assert all(r.outcome is not Outcome.REJECTED for r in results.values())
        with app.db.session() as s:
            assert s.scalar(select(func.count()).select_from(OutboxItem)) == 0
        assert deliver_due(app, ignore_schedule=True).attempted == 0
    finally:
        app.close()
    assert relay_sink.received() == []


def test_loop_protection_alone_refuses_every_machine_message(
    make_config: Any, corpus: Path, tmp_path: Path
) -> None:
    no_rules = tmp_path / "no-rules"
    no_rules.mkdir()
    config = make_config(
        "[autoresponse]\nrequire_explicit_recipient = false\nper_recipient_limit = 1000\n",
        EMAILD_RULES_DIR=str(no_rules),
    )
    app = App.open(config)
    try:
        root = corpus / "sisimai" / "maildir"
        results = ingest_all(app, sisimai_files(corpus), root)
        with app.db.session() as s:
            answered_rows = set(s.scalars(select(OutboxItem.in_reply_to_row)))
            names = {
                m.id: m.raw_sha256
                for m in s.scalars(select(Message).where(Message.id.in_(answered_rows)))
            }
            refused = list(
                s.scalars(select(Message).where(Message.direction == "in", Message.is_auto))
            )
    finally:
        app.close()
    answered = {
        name
        for name, result in results.items()
        if result.message_row_id in names and result.outcome is Outcome.NEW_CASE
    }
    assert answered == HUMAN
    # Each refusal names its reason on the stored message.
    for message in refused:
        reasons = [d for d in message.decision_trace if d["stage"] == "autorespond"]
        assert reasons and reasons[0]["decision"] == "no auto-response", message.decision_trace


@pytest.mark.parametrize("name", sorted(HUMAN))
def test_human_files_are_classified_human(corpus: Path, name: str) -> None:
    from emaild.classify import classify
    from emaild.mime.parse import parse_message

    raw = (corpus / "sisimai" / "maildir" / name).read_bytes()
    parsed = parse_message(raw, spool_threshold=1 << 20)
    assert classify(parsed, None).no_response_reason() == ""
