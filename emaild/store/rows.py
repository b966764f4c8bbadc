"""Rows the pipeline writes for every message, each with one Core statement.

``session.add`` + ``flush`` runs the ORM's unit of work for every row: for
the handful of rows a message makes (case, message, attachments,
participants) that cost more than parsing the message. Here each row is one
prepared ``INSERT ... RETURNING id`` on the session's connection, and the row
is then attached to the session as a persistent ORM object, as if it had been
loaded: later attribute changes are flushed as UPDATEs as usual, and the
rest of the pipeline cannot tell the difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Insert, Table, Update, bindparam, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from emaild.store.models import Attachment, Base, CaseParticipant, Message

M = TypeVar("M", bound=Base)


def insert_row(session: Session, model: type[M], values: dict[str, Any]) -> M:
    """INSERT ``values`` (column defaults fill the rest); the row as a persistent object."""
    row = {**_defaults(model), **values}
    missing = _required(model) - row.keys()
    if missing:
        raise ValueError(f"{model.__name__} needs {', '.join(sorted(missing))}")
    row["id"] = session.connection().execute(_insert(model), row).scalar_one()
    obj = model(**row)
    # Identity and loaded state come from ``row``: the session treats the object
    # as read from the database, not as a new one to insert.
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


def update_row(session: Session, obj: Base, **values: Any) -> None:
    """UPDATE ``obj``'s row with ``values`` (one statement); ``obj`` shows them as loaded."""
    statement = _update(type(obj), tuple(sorted(values)))
    params = {f"new_{key}": value for key, value in values.items()}
    session.connection().execute(statement, {"row_id": obj.id, **params})  # type: ignore[attr-defined]
    for key, value in values.items():
        set_committed_value(obj, key, value)


def insert_attachments(session: Session, message_id: int, rows: Iterable[dict[str, Any]]) -> None:
    """The attachment rows of message ``message_id`` (one executemany)."""
    values = [{**_defaults(Attachment), **r, "message_id": message_id} for r in rows]
    if values:
        session.connection().execute(insert(_table(Attachment)), values)


def add_participants(session: Session, case_id: int, wanted: dict[str, str], *, new: bool) -> None:
    """Record ``{address: role}`` on case ``case_id``, skipping addresses already on it.

    A case created in this transaction (``new``) has none yet: no query.
    """
    if not wanted:
        return
    conn = session.connection()
    if not new:
        existing = set(conn.execute(_PARTICIPANTS, {"case_id": case_id}).scalars())
        wanted = {a: r for a, r in wanted.items() if a not in existing}
    if wanted:
        rows = [{"case_id": case_id, "address": a, "role": r} for a, r in wanted.items()]
        conn.execute(insert(_table(CaseParticipant)), rows)


def stored_with_key(session: Session, dedup_key: str) -> tuple[int, str] | None:
    """``(id, state)`` of the message stored under ``dedup_key``, if there is one."""
    row = session.connection().execute(_BY_DEDUP_KEY, {"key": dedup_key}).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


@cache
def _insert(model: type[Base]) -> Insert:
    table = _table(model)
    return insert(table).returning(table.c.id)


@cache
def _update(model: type[Base], keys: tuple[str, ...]) -> Update:
    table = _table(model)
    # Bind names must differ from column names in an UPDATE's SET clause.
    values: dict[str, Any] = {key: bindparam(f"new_{key}") for key in keys}
    return update(table).where(table.c.id == bindparam("row_id")).values(values)


@cache
def _default_values(model: type[Base]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(scalars, makers)``: column defaults, and callable ones (``default=list``)."""
    scalars: dict[str, Any] = {}
    makers: dict[str, Any] = {}
    for column in _table(model).columns:
        default = column.default
        if column.primary_key:
            continue
        if default is None:
            if column.nullable:
                scalars[column.key] = None
        elif getattr(default, "is_scalar", False):
            scalars[column.key] = getattr(default, "arg", None)
        elif getattr(default, "is_callable", False):
            makers[column.key] = getattr(default, "arg", None)
        else:
            raise TypeError(f"{model.__name__}.{column.key}: unsupported default {default!r}")
    return scalars, makers


def _defaults(model: type[Base]) -> dict[str, Any]:
    """Every column's default for a new row (callable ones called afresh)."""
    scalars, makers = _default_values(model)
    # SQLAlchemy wraps a no-argument default such as ``list`` to take the context.
    return {**scalars, **{key: make(None) for key, make in makers.items()}}


@cache
def _required(model: type[Base]) -> frozenset[str]:
    table = _table(model)
    return frozenset(
        c.key for c in table.columns if not c.primary_key and c.default is None and not c.nullable
    )


_PARTICIPANTS = select(CaseParticipant.address).where(
    CaseParticipant.case_id == bindparam("case_id")
)
_BY_DEDUP_KEY = select(Message.id, Message.state).where(Message.dedup_key == bindparam("key"))
