"""Group commit: concurrent writers share one SQLite transaction, and each keeps its own fate.

The tests force a batch by holding the process's write turn while the
writers queue, then letting go: the leader takes every queued unit into one
transaction. On PostgreSQL ``Database.transact`` gives each unit its own
transaction; the same tests hold there too (minus the batch counts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mailbuilder import build_mail
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from emaild.app import App
from emaild.config import load_config
from emaild.errors import TransientError
from emaild.pipeline import Envelope, Outcome
from emaild.pipeline.context import IngestContext
from emaild.pipeline.core import Pipeline
from emaild.pipeline.stages import STAGES, insert_stage
from emaild.store.models import Case, Message, QuarantineEntry

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[Callable[[str], App]]:
    """Apps on SQLite only: group commit is SQLite's (PostgreSQL commits each unit)."""
    opened: list[App] = []

    def build(toml: str = "") -> App:
        path = tmp_path / "emaild.toml"
        path.write_text(toml)
        env = {"EMAILD_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}
        app = App.open(load_config(path, env))
        assert app.db.group is not None
        opened.append(app)
        return app

    yield build
    for app in opened:
        app.close()


def add_case(subject: str) -> Callable[[Session], int]:
    def work(session: Session) -> int:
        case = Case(
            subject=subject, routing_address="support@example.com", created_at=NOW, updated_at=NOW
        )
        session.add(case)
        session.flush()
        return case.id

    return work


def fail_after_writing(session: Session) -> int:
    add_case("rolled back")(session)
    raise ValueError("this unit fails")


def in_one_batch(app: App, works: list[Callable[[Session], Any]]) -> list[Any]:
    """Run ``works`` from one thread each, queued behind a held write turn: one batch."""
    results: list[Any] = [None] * len(works)

    def call(i: int) -> None:
        try:
            results[i] = app.db.transact(works[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    group = app.db.group
    with app.db.serial_writes():
        for n, thread in enumerate(threads, start=1):
            thread.start()
            # Arrival order = list order, under any load: the next thread starts only
            # once this one is queued (the first leads and waits for the held turn).
            deadline = time.monotonic() + 10
            while group is not None and group.waiting < n and time.monotonic() < deadline:
                time.sleep(0.005)
        if group is None:  # PostgreSQL: no queue; the units run concurrently
            time.sleep(0.2)
    for thread in threads:
        thread.join(30)
    return results


def cases(app: App) -> list[str]:
    with app.db.session() as session:
        return list(session.scalars(select(Case.subject).order_by(Case.id)))


def test_concurrent_units_share_one_commit_and_each_gets_its_own_result(app: App) -> None:
    group = app.db.group
    before = (group.batches, group.units) if group else (0, 0)
    results = in_one_batch(app, [add_case(f"case {i}") for i in range(6)])
    assert all(isinstance(r, int) for r in results)
    assert len(set(results)) == 6
    # Each unit got its own result: the id of the case it wrote.
    with app.db.session() as session:
        by_id = {row.id: row.subject for row in session.execute(select(Case.id, Case.subject))}
    assert {r: by_id[r] for r in results} == {r: f"case {i}" for i, r in enumerate(results)}
    if group is not None:  # SQLite: six units, one transaction, in arrival order
        assert (group.batches - before[0], group.units - before[1]) == (1, 6)
        assert cases(app) == [f"case {i}" for i in range(6)]
    else:  # PostgreSQL commits each on its own, in whatever order the threads ran
        assert sorted(cases(app)) == [f"case {i}" for i in range(6)]


def test_a_failing_unit_rolls_back_only_itself(app: App) -> None:
    results = in_one_batch(app, [add_case("first"), fail_after_writing, add_case("third")])
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert isinstance(results[1], ValueError)
    if app.db.group is not None:  # SQLite: one batch, in arrival order
        assert cases(app) == ["first", "third"]
    else:  # PostgreSQL commits each on its own, in whatever order the threads ran
        assert sorted(cases(app)) == ["first", "third"]


def test_a_failed_commit_fails_every_unit_and_stores_nothing(
    sqlite_app: Callable[[str], App],
) -> None:
    app = sqlite_app("")

    def orphan_message(session: Session) -> None:
        # Checked only at COMMIT: a foreign key naming a case that does not exist.
        session.execute(text("PRAGMA defer_foreign_keys = ON"))
        session.add(
            Message(
                case_id=999_999,
                dedup_key="mid:<orphan@x>",
                raw_sha256="0" * 64,
                raw_size=1,
                received_at=NOW,
            )
        )

    results = in_one_batch(app, [add_case("one"), orphan_message, add_case("two")])
    assert all(isinstance(r, Exception) for r in results), results
    assert cases(app) == []


def test_a_unit_may_not_ask_for_another_transaction(sqlite_app: Callable[[str], App]) -> None:
    app = sqlite_app("")

    def nested(session: Session) -> None:
        app.db.transact(add_case("inner"))

    with pytest.raises(RuntimeError, match="inside a unit"):
        app.db.transact(nested)
    app.db.transact(add_case("after"))  # the committer is still usable
    assert cases(app) == ["after"]


def test_no_write_turn_fails_every_waiting_unit_with_a_transient_error(
    sqlite_app: Callable[[str], App],
) -> None:
    app = sqlite_app("[storage]\nbusy_timeout_seconds = 0.5\n")
    results: list[Any] = []
    with app.db.serial_writes():  # held longer than the busy timeout
        thread = threading.Thread(target=lambda: results.append(_outcome(app, add_case("late"))))
        thread.start()
        thread.join(10)
    assert len(results) == 1 and isinstance(results[0], TransientError)
    app.db.transact(add_case("later"))  # and the next caller leads again
    assert cases(app) == ["later"]


def _outcome(app: App, work: Callable[[Session], Any]) -> Any:
    try:
        return app.db.transact(work)
    except Exception as exc:
        return exc


# --- the pipeline on top of it ----------------------------------------------------------
class PoisonStage:
    """Fails inside the transaction for one message, after the others' writes."""

    name = "poison"
    description = "raises for the message whose subject is 'poison'"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None
        if ctx.parsed.subject == "poison":
            raise RuntimeError("a bug that only this message triggers")


def mail(n: int, subject: str) -> bytes:
    return build_mail(
        sender=f"Customer {n} <c{n}@customer.test>",
        subject=subject,
        message_id=f"<group-{n}@customer.test>",
        body=f"Hello {n}",
    )


def test_one_bad_message_in_a_batch_is_quarantined_and_the_rest_are_stored(app: App) -> None:
    stages = insert_stage(STAGES, PoisonStage(), before="autorespond")
    pipeline = Pipeline(app.services, app.db, stages=stages)
    subjects = ["one", "two", "poison", "four", "five"]
    works = [
        (lambda raw: lambda _s: pipeline.ingest(raw, Envelope(channel="test")))(mail(n, s))
        for n, s in enumerate(subjects)
    ]
    # Each ingest is a thread; its transactional part queues behind the held turn.
    outcomes: list[Any] = [None] * len(works)

    def call(i: int) -> None:
        outcomes[i] = works[i](None)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    group = app.db.group
    before = (group.batches, group.units) if group is not None else (0, 0)
    with app.db.serial_writes():
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while group is not None and group.waiting < len(works) and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(30)
    if group is not None:  # SQLite: the five in one transaction, then the quarantine entry
        assert (group.batches - before[0], group.units - before[1]) == (2, 6)
    by_subject = dict(zip(subjects, outcomes, strict=True))
    assert by_subject["poison"].outcome is Outcome.QUARANTINED
    for subject in ("one", "two", "four", "five"):
        assert by_subject[subject].outcome is Outcome.NEW_CASE, subject
    with app.db.session() as session:
        assert session.scalar(select(func.count(Message.id))) == 4
        assert sorted(session.scalars(select(Case.subject))) == ["five", "four", "one", "two"]
        [entry] = session.scalars(select(QuarantineEntry)).all()
        assert entry.stage == "poison" and "only this message" in entry.error
