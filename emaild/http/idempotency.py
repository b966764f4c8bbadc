"""``Idempotency-Key`` on POST: the same key returns the first result, does nothing twice.

The key row is inserted first in the same transaction as the POST's change,
and the unique (token, key) index decides between concurrent requests: the
loser's transaction fails on the index (PostgreSQL) or finds the winner's row
(SQLite's shared group transaction) and replays the stored answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emaild.http.context import ApiContext
from emaild.http.problems import Problem
from emaild.store.models import IdempotencyKey
from emaild.store.rows import insert_row, update_row

MAX_KEY = 255
Answer = tuple[int, dict[str, Any]]


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\0".join((method.encode(), path.encode(), body))).hexdigest()


def _stored(session: Session, token: str, key: str) -> IdempotencyKey | None:
    return session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.token_name == token, IdempotencyKey.key == key)
    ).first()


def _replay(row: IdempotencyKey, digest: str) -> Answer:
    if row.request_hash != digest:
        raise Problem(422, "this Idempotency-Key was used for a different request")
    return row.status_code, dict(row.body)


def run(
    ctx: ApiContext,
    token: str,
    key: str | None,
    digest: str,
    work: Callable[[Session], Answer],
) -> tuple[Answer, bool]:
    """``(answer, replayed)``: ``work``'s answer, or the stored one for a repeated key."""
    if key is None:
        return ctx.app.db.transact(work), False
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise Problem(422, f"Idempotency-Key: 1 to {MAX_KEY} printable characters")
    now = ctx.now()

    def unit(session: Session) -> tuple[Answer, bool]:
        existing = _stored(session, token, key)
        if existing is not None:
            return _replay(existing, digest), True
        row = insert_row(
            session,
            IdempotencyKey,
            {"token_name": token, "key": key, "request_hash": digest, "created_at": now},
        )
        status, body = work(session)
        update_row(session, row, status_code=status, body=body)
        return (status, body), False

    try:
        return ctx.app.db.transact(unit)
    except IntegrityError:
        # A concurrent request with this key committed first: answer as it did.
        with ctx.app.db.session(readonly=True) as session:
            existing = _stored(session, token, key)
            if existing is None:
                raise
            return _replay(existing, digest), True
