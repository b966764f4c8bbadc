"""``emaild.store.rows``: Core INSERTs whose rows then act as ORM objects read from the database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, select

from emaild.app import App
from emaild.store.models import Attachment, Case, CaseParticipant, Message
from emaild.store.rows import (
    add_participants,
    insert_attachments,
    insert_row,
    stored_with_key,
    update_row,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def new_case(session: object) -> Case:
    return insert_row(
        session,  # type: ignore[arg-type]
        Case,
        {"routing_address": "support@example.com", "created_at": NOW, "updated_at": NOW},
    )


def test_an_inserted_row_is_persistent_with_its_defaults_and_later_changes_are_saved(
    app: App,
) -> None:
    with app.db.session() as session, session.begin():
        case = new_case(session)
        state = inspect(case)
        assert state.persistent and not state.modified
        # Column defaults are filled in, and read back without a query.
        assert (case.status, case.priority, case.tags, case.loop_count) == ("new", "Medium", [], 0)
        message = insert_row(
            session,
            Message,
            {
                "case_id": case.id,
                "dedup_key": "mid:<a@x>",
                "raw_sha256": "0" * 64,
                "raw_size": 10,
                "received_at": NOW,
            },
        )
        insert_attachments(
            session, message.id, [{"filename": "a.txt", "size": 1, "sha256": "1" * 64}]
        )
        add_participants(session, case.id, {"a@x.test": "customer"}, new=True)
        # An attribute change on the object is flushed as usual.
        case.priority = "High"
        message.references = ["<r@x>"]
    with app.db.session() as session:
        stored = session.get(Case, case.id)
        assert stored is not None and stored.priority == "High"
        row = session.scalars(select(Message)).one()
        assert (row.case_id, row.references, row.state, row.decision_trace) == (
            case.id,
            ["<r@x>"],
            "stored",
            [],
        )
        assert [a.filename for a in row.attachments] == ["a.txt"]
        assert [a.content_type for a in session.scalars(select(Attachment))] == [
            "application/octet-stream"
        ]


def test_callable_defaults_are_fresh_for_every_row(app: App) -> None:
    with app.db.session() as session, session.begin():
        one, two = new_case(session), new_case(session)
        one.tags.append("x")  # the same list object in both would leak this
        assert two.tags == []


def test_a_missing_required_column_is_refused_before_any_sql(app: App) -> None:
    with (
        app.db.session() as session,
        session.begin(),
        pytest.raises(ValueError, match="created_at"),
    ):
        insert_row(session, Case, {"routing_address": "support@example.com", "updated_at": NOW})


def test_update_row_writes_and_shows_the_value_as_loaded(app: App) -> None:
    with app.db.session() as session, session.begin():
        case = new_case(session)
        update_row(session, case, auto_responses=1, owner="ann")
        assert not inspect(case).modified  # nothing left for the ORM to flush
    with app.db.session() as session:
        stored = session.get(Case, case.id)
        assert stored is not None and (stored.auto_responses, stored.owner) == (1, "ann")


def test_participants_already_on_a_case_are_not_added_twice(app: App) -> None:
    with app.db.session() as session, session.begin():
        case = new_case(session)
        add_participants(session, case.id, {"a@x.test": "customer"}, new=True)
        add_participants(session, case.id, {"a@x.test": "cc", "b@x.test": "cc"}, new=False)
    with app.db.session() as session:
        rows = session.execute(
            select(CaseParticipant.address, CaseParticipant.role).order_by(CaseParticipant.address)
        ).all()
        assert [tuple(r) for r in rows] == [("a@x.test", "customer"), ("b@x.test", "cc")]


def test_stored_with_key(app: App) -> None:
    with app.db.session() as session, session.begin():
        assert stored_with_key(session, "mid:<a@x>") is None
        message = insert_row(
            session,
            Message,
            {
                "state": "held",
                "dedup_key": "mid:<a@x>",
                "raw_sha256": "0" * 64,
                "raw_size": 10,
                "received_at": NOW,
            },
        )
        assert stored_with_key(session, "mid:<a@x>") == (message.id, "held")
