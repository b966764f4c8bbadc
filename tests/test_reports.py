"""Reports on a generated history whose answers are known (issue 15), on both databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emaild.app import App
from emaild.reports.report import build_report, period
from emaild.reports.topics import index_case
from emaild.store.models import Case, CaseEvent, Message, OutboxItem, QuarantineEntry

# A Monday: the report's week is [T, T + 7 days).
T = datetime(2026, 3, 2, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)


def _case(s: Any, subject: str, created: datetime, **fields: Any) -> Case:
    case = Case(
        subject=subject,
        routing_address="support@example.com",
        customer="someone@customer.test",
        created_at=created,
        updated_at=created,
        **fields,
    )
    s.add(case)
    s.flush()
    index_case(s, case.id, subject, created)  # what the persist stage does
    return case


def _message(s: Any, case_id: int | None, at: datetime, **fields: Any) -> None:
    n = s.query(Message).count()
    s.add(
        Message(
            case_id=case_id,
            dedup_key=f"gen:{n}",
            raw_sha256="0" * 64,
            raw_size=1,
            received_at=at,
            **fields,
        )
    )


def _status(s: Any, case_id: int, at: datetime, old: str, new: str) -> None:
    data = {"field": "status", "from": old, "to": new}
    s.add(CaseEvent(case_id=case_id, kind="case.status", actor="ann", at=at, data=data))


def _outbox(s: Any, status: str, sent: datetime | None) -> None:
    s.add(
        OutboxItem(
            created_at=T - 2 * D,
            kind="autoresponse",
            rcpt_to="someone@customer.test",
            raw=b"x",
            status=status,
            next_attempt_at=T,
            sent_at=sent,
        )
    )


def generate(app: App) -> None:
    """The history the expected numbers below are worked out from."""
    with app.db.session() as s, s.begin():
        c0 = _case(s, "Old ticket", T - 10 * D, status="closed", closed_at=T + 2 * D)
        _status(s, c0.id, T + 2 * D, "open", "closed")
        c1 = _case(s, "Login fails", T + 10 * H, priority="High", owner="ann")
        c1.status, c1.closed_at = "closed", T + D + 10 * H
        _message(s, c1.id, T + 10 * H)
        _message(s, c1.id, T + 11 * H, direction="out")  # agent: 3600 s
        _status(s, c1.id, T + D + 10 * H, "open", "closed")
        c2 = _case(s, "Password reset", T + D + 9 * H, origin="Web", owner="bob", status="open")
        _message(s, c2.id, T + D + 9.5 * H, direction="out")  # agent: 1800 s
        _status(s, c2.id, T + D + 11 * H, "open", "closed")
        _status(s, c2.id, T + 2 * D, "closed", "open")  # reopened
        c3 = _case(s, "Refund request", T + 2 * D + 12 * H)
        # An auto-response is not a first response.
        _message(
            s,
            c3.id,
            T + 2 * D + 12 * H + timedelta(minutes=1),
            direction="out",
            is_auto=True,
        )
        for i in range(6):  # this week's spike
            _case(s, "Printer jammed", T + 3 * D + i * H)
        for i in range(3):
            _case(s, "Invoice copy", T + 4 * D + i * H)
        for week in range(1, 5):  # the usual level: 1 printer and 2 invoice cases a week
            _case(s, "Re: printer jammed [#1]", T - week * 7 * D + H)
            _case(s, "Invoice copy", T - week * 7 * D + 2 * H)
            _case(s, "invoice COPY", T - week * 7 * D + 3 * H)
        _outbox(s, "sent", T + 2 * D + 13 * H)
        _outbox(s, "sent", T - D)
        _outbox(s, "queued", None)
        for at in (T + H, T + 5 * D, T - H):
            s.add(QuarantineEntry(created_at=at, reason="rule"))
        _message(s, None, T + 3 * D, state="held")
        _message(s, None, T - 3 * D, state="held")


EXPECTED = {
    "cases_opened": 12,
    "cases_closed": 2,
    "cases_answered": 2,
    "first_response_seconds": 2700.0,
    "resolution_seconds": (12 * 86400 + 86400) / 2,
    "reopened": 1,
    "reopen_rate": 0.5,
    "auto_responses_sent": 1,
    "quarantined": 2,
    "held": 1,
    "by_origin": {"Email": {"opened": 11, "closed": 2}, "Web": {"opened": 1, "closed": 0}},
}


def _row(key: str, opened: int, closed: int, answered: int, first: Any, res: Any) -> dict[str, Any]:
    return {
        "key": key,
        "opened": opened,
        "closed": closed,
        "answered": answered,
        "first_response_seconds": first,
        "resolution_seconds": res,
    }


def test_report_numbers_groups_and_spike(app: App) -> None:
    generate(app)
    with app.db.session() as s:
        report = build_report(s, T, T + 7 * D, "owner")
        by_day = build_report(s, T, T + 7 * D, "day")["groups"]
        by_week = build_report(s, T, T + 7 * D, "week")["groups"]
    assert {k: report[k] for k in EXPECTED} == EXPECTED
    assert report["groups"] == [
        _row("", 10, 1, 0, None, 12 * 86400.0),
        _row("ann", 1, 1, 1, 3600.0, 86400.0),
        _row("bob", 1, 0, 1, 1800.0, None),
    ]
    assert by_day == [
        _row("2026-03-02", 1, 0, 1, 3600.0, None),
        _row("2026-03-03", 1, 1, 1, 1800.0, 86400.0),
        _row("2026-03-04", 1, 1, 0, None, 12 * 86400.0),
        _row("2026-03-05", 6, 0, 0, None, None),
        _row("2026-03-06", 3, 0, 0, None, None),
    ]
    assert by_week == [_row("2026-03-02", 12, 2, 2, 2700.0, 561600.0)]
    topics = {t["topic"]: t for t in report["topics"]}
    assert topics["printer"] == {
        "topic": "printer",
        "cases": 6,
        "usual": 1.0,
        "stdev": 0.0,
        "spike": True,
    }
    assert topics["jammed"]["spike"] is True
    assert topics["invoice"] == {
        "topic": "invoice",
        "cases": 3,
        "usual": 2.0,
        "stdev": 0.0,
        "spike": False,
    }
    assert topics["login"] == {
        "topic": "login",
        "cases": 1,
        "usual": 0.0,
        "stdev": 0.0,
        "spike": False,
    }
    # Spikes first, then by volume; stop words and case tokens are not topics.
    assert [t["topic"] for t in report["topics"][:2]] == ["jammed", "printer"]
    assert "re" not in topics and "1" not in topics
    # The week before has no spike: printer was at its usual level there.
    with app.db.session() as s:
        before = build_report(s, T - 7 * D, T)
    assert not [t for t in before["topics"] if t["spike"]]
    assert before["cases_opened"] == 3


def test_period_parsing() -> None:
    now = datetime(2026, 3, 9, 12, tzinfo=UTC)
    assert period(None, None, now) == (now - 7 * D, now)
    assert period("2026-03-02", "2026-03-09T00:00:00+01:00", now) == (
        T,
        datetime(2026, 3, 8, 23, tzinfo=UTC),
    )
    from emaild.errors import InputError

    for since, until in (("2026-03-09", "2026-03-02"), ("yesterday", None), ("1900-01-01", None)):
        with pytest.raises(InputError):
            period(since, until, now)


def test_cli_report_json_and_csv(app: App, run_cli: Any) -> None:
    generate(app)
    args = ("report", "--since", "2026-03-02", "--until", "2026-03-09")
    done = run_cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {k: data[k] for k in EXPECTED} == EXPECTED
    done = run_cli(*args, "--csv", "--by", "origin")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "origin,opened,closed,answered,first_response_seconds,resolution_seconds",
        "Email,11,2,1,3600.0,561600.0",
        "Web,1,0,1,1800.0,",
    ]
    text = run_cli(*args)
    assert text.returncode == 0 and b"SPIKE" in text.stdout


def test_terms_come_from_the_pipeline_and_the_migration(app: App) -> None:
    from mailbuilder import build_mail
    from sqlalchemy import inspect, select

    from emaild.intake import Envelope
    from emaild.store.database import alembic_config, upgrade
    from emaild.store.models import CaseTerm

    raw = build_mail(subject="Re: [#7] Scanner offline AGAIN, please help", message_id="<t@x.test>")
    result = app.pipeline.ingest(raw, Envelope(channel="test"))
    with app.db.session() as s:
        got = set(s.scalars(select(CaseTerm.term).where(CaseTerm.case_id == result.case_number)))
    assert got == {"scanner", "offline"}
    # A database made before case_terms: the migration works the terms out.
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = alembic_config(app.db.engine)
    before = ScriptDirectory.from_config(cfg).get_revision("0003").down_revision
    command.downgrade(cfg, str(before))
    with app.db.engine.connect() as conn:
        assert "case_terms" not in inspect(conn).get_table_names()
    upgrade(app.db.engine)
    with app.db.session() as s:
        assert set(s.scalars(select(CaseTerm.term))) == {"scanner", "offline"}
        assert build_report(s, T, T + 7 * D)["topics"] == []  # created now, not in March
