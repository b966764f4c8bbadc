"""Finding cases: filters and keyset pagination (newest first) for the API and CLI.

The page is ``id < cursor ORDER BY id DESC LIMIT n`` on the primary key, so
the cost of a page does not grow with the number of cases; message counts
are taken for the page's cases only.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, func, select
from sqlalchemy.orm import Session

from emaild.cases import case_summary
from emaild.errors import InputError
from emaild.store.models import Case, Message

MAX_LIMIT = 200


@dataclass(frozen=True)
class CaseFilter:
    status: str | None = None
    priority: str | None = None
    origin: str | None = None
    owner: str | None = None
    routing_address: str | None = None
    customer: str | None = None
    tag: str | None = None
    updated_since: datetime | None = None
    q: str | None = None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))["before"]
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise InputError("cursor: not a cursor this API returned") from exc
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError("cursor: not a cursor this API returned")
    return value


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def find_cases(
    session: Session, where: CaseFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of case summaries and the cursor of the next page (None: last page)."""
    limit = max(1, min(limit, MAX_LIMIT))
    query = select(Case)
    for name in ("status", "priority", "origin", "owner"):
        value = getattr(where, name)
        if value is not None:
            query = query.where(getattr(Case, name) == value)
    if where.routing_address is not None:
        query = query.where(Case.routing_address == where.routing_address.strip().lower())
    if where.customer is not None:
        query = query.where(Case.customer == where.customer.strip().lower())
    if where.updated_since is not None:
        query = query.where(Case.updated_at >= where.updated_since)
    if where.tag is not None:
        # Tags are a JSON list: match the quoted tag in its text (portable across backends).
        query = query.where(cast(Case.tags, String).like(_like(json.dumps(where.tag)), escape="\\"))
    if where.q:
        query = query.where(Case.subject.ilike(_like(where.q), escape="\\"))
    if cursor is not None:
        query = query.where(Case.id < decode_cursor(cursor))
    cases = list(session.scalars(query.order_by(Case.id.desc()).limit(limit + 1)))
    more = len(cases) > limit
    cases = cases[:limit]
    counts: dict[int, int] = {}
    if cases:
        ids = [c.id for c in cases]
        counts = {
            int(case_id or 0): int(n)
            for case_id, n in session.execute(
                select(Message.case_id, func.count(Message.id))
                .where(Message.case_id.in_(ids))
                .group_by(Message.case_id)
            )
        }
    items = [case_summary(c, counts.get(c.id, 0)) for c in cases]
    return items, (encode_cursor(cases[-1].id) if more else None)
