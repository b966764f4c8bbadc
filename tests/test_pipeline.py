"""The pipeline end to end on both backends: new case, duplicate, quarantine."""

from __future__ import annotations

from mailbuilder import count
from sqlalchemy import select

from emaild.app import App
from emaild.pipeline import Envelope, Outcome
from emaild.pipeline.stages import insert_stage
from emaild.store.models import Case, Message, QuarantineEntry

SIMPLE = (
    b"From: Alice Example <alice@customer.test>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: =?utf-8?q?Printer_on_fire_=E2=80=94_help?=\r\n"
    b"Message-ID: <m1@customer.test>\r\n"
    b"\r\n"
    b"It is on fire.\r\n"
)


def test_new_case_then_duplicate(app: App) -> None:
    first = app.pipeline.ingest(SIMPLE, Envelope(channel="test"))
    assert first.outcome is Outcome.NEW_CASE
    assert first.case_number is not None
    second = app.pipeline.ingest(SIMPLE, Envelope(channel="test"))
    assert second.outcome is Outcome.DUPLICATE
    assert second.case_number == first.case_number
    assert count(app, Case) == 1
    assert count(app, Message) == 1
    with app.db.session() as s:
        case = s.get(Case, first.case_number)
        assert case is not None
        assert case.subject == "Printer on fire — help"
        assert case.customer == "alice@customer.test"
        message = s.scalars(select(Message)).one()
        assert message.text.strip() == "It is on fire."
        assert [d["stage"] for d in message.decision_trace][:2] == ["parse", "route"]
    assert app.blobs.read(first_raw_sha(app)) == SIMPLE


def first_raw_sha(app: App) -> str:
    with app.db.session() as s:
        return str(s.scalars(select(Message.raw_sha256)).one())


def test_same_bytes_without_message_id_is_one_case(app: App) -> None:
    raw = SIMPLE.replace(b"Message-ID: <m1@customer.test>\r\n", b"")
    assert app.pipeline.ingest(raw, Envelope()).outcome is Outcome.NEW_CASE
    assert app.pipeline.ingest(raw, Envelope()).outcome is Outcome.DUPLICATE
    other = raw.replace(b"fire.", b"fire!")
    assert app.pipeline.ingest(other, Envelope()).outcome is Outcome.NEW_CASE
    assert count(app, Case) == 2


class Boom:
    """A stage that always fails: its message must be quarantined, raw."""

    name = "boom"
    description = "always fails"
    needs_session = True

    def __call__(self, ctx: object) -> None:
        raise RuntimeError("kaboom")


def test_failing_stage_quarantines_raw(app: App) -> None:
    app.pipeline.stages = insert_stage(app.pipeline.stages, Boom(), after="accept")
    result = app.pipeline.ingest(SIMPLE, Envelope(channel="test"))
    assert result.outcome is Outcome.QUARANTINED
    assert count(app, Case) == 0
    with app.db.session() as s:
        entry = s.scalars(select(QuarantineEntry)).one()
        assert entry.stage == "boom"
        assert "kaboom" in entry.error
        assert app.blobs.read(entry.raw_sha256) == SIMPLE
    # The same bytes failing again are one entry with two attempts, not two entries.
    app.pipeline.ingest(SIMPLE, Envelope(channel="test"))
    with app.db.session() as s:
        assert s.scalars(select(QuarantineEntry)).one().attempts == 2


def test_simultaneous_copies_are_one_message_not_a_quarantine(app: App) -> None:
    """Two channels delivering the same message at the same moment (contract 2)."""
    import threading

    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def deliver(raw: bytes, barrier: threading.Barrier) -> None:
        barrier.wait()
        result = app.pipeline.ingest(raw, Envelope(channel="test"))
        with lock:
            outcomes.append(result.outcome)

    for n in range(15):
        raw = SIMPLE.replace(b"<m1@customer.test>", f"<race-{n}@customer.test>".encode())
        raw = raw.replace(b"It is on fire.", f"Printer {n} is on fire.".encode())
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=deliver, args=(raw, barrier)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(outcomes) == 45
    assert outcomes.count(Outcome.NEW_CASE) == 15
    assert outcomes.count(Outcome.DUPLICATE) == 30
    assert count(app, QuarantineEntry) == 0
    assert count(app, Message) == 15


def test_routine_quarantine_logs_one_line_and_keeps_the_stack_in_the_entry(app: App) -> None:
    """`journalctl -p err` is for trouble: a quarantine is a warning without a stack."""
    from structlog.testing import capture_logs

    app.pipeline.stages = insert_stage(app.pipeline.stages, Boom(), after="accept")
    with capture_logs() as logged:
        result = app.pipeline.ingest(SIMPLE, Envelope(channel="test"))
    [line] = [e for e in logged if e["event"] == "ingest.quarantined"]
    assert line["log_level"] == "warning"
    assert line["error"] == "RuntimeError: kaboom"
    assert line["quarantine_id"] == result.quarantine_id
    # The stack is for whoever fixes the bug: in the entry, and at debug level only.
    stacks = [e for e in logged if "traceback" in e or "exc_info" in e]
    assert stacks and all(e["log_level"] == "debug" for e in stacks)
    assert not any(e["log_level"] == "error" for e in logged)
    with app.db.session() as s:
        entry = s.scalars(select(QuarantineEntry)).one()
        assert entry.error.startswith("RuntimeError: kaboom\n\nTraceback (most recent call last)")
        assert 'raise RuntimeError("kaboom")' in entry.error
