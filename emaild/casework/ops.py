"""Changing a case: fields (status, priority, owner, category, tags) and notes.

A change is a compare-and-set on the case's ``version`` (the API's ETag): two
agents who read the same version cannot both write, the second learns it
(``VersionConflict``) instead of silently overwriting the first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from emaild.casework.events import record, record_many
from emaild.config_model import Priority
from emaild.errors import InputError
from emaild.store.models import Case, CaseEvent
from emaild.text import one_line

STATUSES = ("new", "open", "pending", "closed")
PRIORITIES: tuple[str, ...] = get_args(Priority)
FIELDS = ("status", "priority", "owner", "category", "tags")
MAX_TAGS = 50
MAX_NOTE_CHARS = 100_000


class CaseNotFound(InputError):
    """No case with that number."""


class VersionConflict(InputError):
    """The case changed since the caller read it (HTTP 412)."""


def get_case(session: Session, number: int) -> Case:
    case = session.get(Case, number)
    if case is None:
        raise CaseNotFound(f"no case {number}")
    return case


def clean_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise field changes; raise ``InputError`` naming the field."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in FIELDS:
            raise InputError(f"{key}: not a field that can be changed")
        if key == "status":
            if value not in STATUSES:
                raise InputError(f"status: one of {', '.join(STATUSES)}")
        elif key == "priority":
            if value not in PRIORITIES:
                raise InputError(f"priority: one of {', '.join(PRIORITIES)}")
        elif key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise InputError("tags: a list of strings")
            value = list(dict.fromkeys(one_line(t, 64) for t in value if t.strip()))
            if len(value) > MAX_TAGS:
                raise InputError(f"tags: at most {MAX_TAGS}")
        else:
            if not isinstance(value, str):
                raise InputError(f"{key}: a string")
            value = one_line(value, 255)
        out[key] = value
    return out


def update_case(
    session: Session,
    number: int,
    changes: dict[str, Any],
    *,
    actor: str,
    now: datetime,
    if_version: int | None = None,
) -> Case:
    """Apply ``changes`` to case ``number``; one event per field that changed.

    ``if_version``: only if the case is still at that version, else
    ``VersionConflict``. No actual change leaves the case (and version) as is.
    """
    changes = clean_changes(changes)
    case = get_case(session, number)
    if if_version is not None and case.version != if_version:
        raise VersionConflict(f"case {number} is at version {case.version}, not {if_version}")
    before = {k: getattr(case, k) for k in changes}
    diff = {k: v for k, v in changes.items() if before[k] != v}
    if not diff:
        return case
    values: dict[str, Any] = {**diff, "updated_at": now, "version": case.version + 1}
    if "status" in diff:
        values["closed_at"] = now if diff["status"] == "closed" else None
    # Compare-and-set: a concurrent writer that got there first makes this match nothing.
    result: Any = session.execute(
        update(Case).where(Case.id == number, Case.version == case.version).values(**values)
    )
    if result.rowcount != 1:
        raise VersionConflict(f"case {number} changed meanwhile")
    events = [
        (number, _event_kind(k), {"field": k, "from": before[k], "to": v}) for k, v in diff.items()
    ]
    record_many(session, events, actor, now)
    return _reload(session, number)


def _event_kind(field: str) -> str:
    return {"status": "case.status", "owner": "case.assigned"}.get(field, f"case.{field}")


def touch(session: Session, case: Case, now: datetime) -> None:
    """Bump ``case``'s version and time for a change that is not a field (a reply)."""
    session.execute(
        update(Case).where(Case.id == case.id).values(updated_at=now, version=Case.version + 1)
    )


def add_note(session: Session, number: int, text: str, *, actor: str, now: datetime) -> int:
    """An internal note on the case (never mailed); returns the event id."""
    if not text.strip():
        raise InputError("text: a note needs text")
    if len(text) > MAX_NOTE_CHARS:
        raise InputError(f"text: at most {MAX_NOTE_CHARS} characters")
    case = get_case(session, number)
    touch(session, case, now)
    record(session, number, "note.added", actor, now, text=text)
    return int(
        session.scalars(
            select(CaseEvent.id)
            .where(CaseEvent.case_id == number, CaseEvent.kind == "note.added")
            .order_by(CaseEvent.id.desc())
            .limit(1)
        ).one()
    )


def _reload(session: Session, number: int) -> Case:
    return session.scalars(
        select(Case).where(Case.id == number).execution_options(populate_existing=True)
    ).one()
