"""Zero auto-responses to the sisimai corpus through every channel, not just the pipe.

``test_autoresponse_corpus`` feeds the 614 files in process. Here they arrive
as each channel delivers them, with the auto-responder's own loop protection
alone (no rules, no To/Cc requirement): the pipe with ``--from '<>'`` as an
MTA's pipe transport passes a bounce's null sender, a bulk import, the real
SMTP listener with ``MAIL FROM:<>``, and a real Dovecot mailbox polled over
IMAP. Machine mail gets nothing on any of them; the three files people wrote
may be answered only where no null sender says otherwise. SQLite only: the
classification is under test here, not the storage backend.
"""

from __future__ import annotations

import hashlib
import smtplib
from pathlib import Path
from typing import Any

import pytest
from smtp_helpers import smtp_listener
from sqlalchemy import select
from test_autoresponse_corpus import HUMAN, sisimai_files

from emaild.app import App
from emaild.channels.imap.poller import MailboxPoller
from emaild.channels.importer import ImportSummary, import_one
from emaild.config import MailboxConfig
from emaild.intake import Envelope, Outcome
from emaild.store.models import Message, OutboxItem

SUPPORT = "support@example.com"
LOOP_PROTECTION_ONLY = (
    "[autoresponse]\nrequire_explicit_recipient = false\nper_recipient_limit = 1000\n"
    # 43 of the reports carry lines over RFC 5321's 1,000 octets; real MTAs accept them.
    "[smtp]\nmax_line_length = 100000\n"
)
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def corpus_app(make_app: Any, tmp_path: Path) -> App:
    no_rules = tmp_path / "no-rules"
    no_rules.mkdir()
    app: App = make_app(LOOP_PROTECTION_ONLY, EMAILD_RULES_DIR=str(no_rules))
    return app


def _key(raw: bytes) -> str:
    # IMAP hands back CRLF line ends whatever was appended: compare without them.
    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def answered_files(app: App, files: list[Path]) -> set[str]:
    """The corpus files (by name under maildir/) that got an auto-response."""
    by_key = {_key(path.read_bytes()): path for path in files}
    with app.db.session() as session:
        rows = set(session.scalars(select(OutboxItem.in_reply_to_row)))
        shas = list(session.scalars(select(Message.raw_sha256).where(Message.id.in_(rows))))
    answered = [by_key[_key(app.blobs.read(sha))] for sha in shas]
    return {f"{path.parent.name}/{path.name}" for path in answered}


def stored(app: App) -> int:
    """Inbound message rows (copies with the same Message-ID are one row)."""
    with app.db.session() as session:
        return len(list(session.scalars(select(Message.id).where(Message.direction == "in"))))


def test_pipe_with_a_null_sender_answers_nothing(corpus_app: App, corpus: Path) -> None:
    files = sisimai_files(corpus)
    outcomes = set()
    for path in files:  # what `emaild ingest --from '<>'` hands the pipeline
        envelope = Envelope(channel="pipe", mail_from="<>", routing_hint=SUPPORT)
        outcomes.add(corpus_app.pipeline.ingest(path.read_bytes(), envelope).outcome)
    assert Outcome.REJECTED not in outcomes and stored(corpus_app) > 0
    assert answered_files(corpus_app, files) == set()


def test_import_answers_only_what_people_wrote(corpus_app: App, corpus: Path) -> None:
    files = sisimai_files(corpus)
    summary = ImportSummary()
    for path in files:
        import_one(corpus_app.pipeline, str(path), path.read_bytes(), summary, to=SUPPORT)
    assert summary.failed == 0, summary.errors[:3]
    assert answered_files(corpus_app, files) <= HUMAN


def test_smtp_with_a_null_sender_answers_nothing(corpus_app: App, corpus: Path) -> None:
    files = sisimai_files(corpus)
    refused = 0
    with smtp_listener(corpus_app) as (host, port), smtplib.SMTP(host, port, timeout=30) as client:
        for path in files:
            try:
                client.sendmail("", [SUPPORT], path.read_bytes())
            except smtplib.SMTPDataError:
                refused += 1  # unusable input refused at DATA: nothing stored, nothing sent
    assert refused == 0
    assert stored(corpus_app) > 0
    assert answered_files(corpus_app, files) == set()


@pytest.mark.dovecot
def test_imap_answers_only_what_people_wrote(corpus_app: App, corpus: Path, dovecot: Any) -> None:
    files = sisimai_files(corpus)
    user = dovecot.new_user("sisimai")
    dovecot.append(user, [path.read_bytes() for path in files])
    box = MailboxConfig.model_validate(
        {
            "name": "support",
            "routing_address": SUPPORT,
            "host": dovecot.host,
            "port": dovecot.port,
            "tls": "plain",
            "user": user.name,
            "password": user.password,
            "idle": False,
            "batch_size": 1000,
        }
    )
    poller = MailboxPoller(corpus_app, box)
    try:
        for _ in range(3):  # a poll takes at most one batch's bytes
            poller.poll_once()
    finally:
        poller.close()
    with corpus_app.db.session() as session:
        polled = session.scalars(select(Message.channel).where(Message.direction == "in"))
        assert set(polled) == {"imap"}
    assert answered_files(corpus_app, files) <= HUMAN
