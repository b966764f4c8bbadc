"""Replacing one address wherever it is written: every text column, and blobs.

``scrub_columns`` walks every string and JSON column of every table in the
schema (so a table added later is covered without a change here), finds the
rows that mention the address with one SQL ``LIKE`` per column, and rewrites
the address in them. ``redact_blob`` does the same to a blob's bytes and
stores the result as a new blob (blobs are content-addressed: the old one is
deleted once no row refers to it).

Only the address as written is found: case-insensitively, but not inside
base64 or quoted-printable bodies, RFC 2047 encoded words or JSON's ``\\u``
escapes of a non-ASCII address.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Column, Table, Text, and_, cast, func, select, update
from sqlalchemy.orm import Session

from emaild.store.blobs import BlobStore
from emaild.store.models import Base
from emaild.store.safetext import SafeJSON, SafeString, SafeText

# What an erased address becomes: still an address, so mail stays parseable.
ERASED = "erased@erased.invalid"


def like_pattern(address: str) -> str:
    """``%address%`` for a LIKE with ``\\`` as the escape character."""
    escaped = address.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def text_columns() -> Iterator[tuple[Table, Column[Any]]]:
    """Every string and JSON column of the schema that is not (part of) a primary key."""
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if not column.primary_key and isinstance(column.type, SafeString | SafeText | SafeJSON):
                yield table, column


# The address only where it stands alone: not the tail of ``jimbob@example.org``
# (a character that may end a local part before it) and not the head of
# ``bob@example.org.uk`` (a domain going on after it).
_BEFORE = r"(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])"
_AFTER = r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9])"


def address_pattern(address: str) -> re.Pattern[str]:
    """``address`` as a whole address, in any letter case."""
    return re.compile(_BEFORE + re.escape(address) + _AFTER, re.IGNORECASE)


def replace_in(value: Any, pattern: re.Pattern[str]) -> Any:
    """``value`` (text or JSON-like) with every match of ``pattern`` replaced by ``ERASED``."""
    if isinstance(value, str):
        return pattern.sub(ERASED, value)
    if isinstance(value, list):
        return [replace_in(v, pattern) for v in value]
    if isinstance(value, dict):
        return {replace_in(k, pattern): replace_in(v, pattern) for k, v in value.items()}
    return value


def scrub_columns(session: Session, address: str) -> dict[str, set[tuple[Any, ...]]]:
    """Rewrite ``address`` in every text column; the primary keys changed, per table."""
    pattern = address_pattern(address)
    like = like_pattern(address.lower())
    changed: dict[str, set[tuple[Any, ...]]] = {}
    for table, column in text_columns():
        keys = list(table.primary_key.columns)
        query = select(*keys, column).where(func.lower(cast(column, Text)).like(like, escape="\\"))
        for row in session.execute(query).all():
            *pk, value = row
            new = replace_in(value, pattern)
            if new == value:
                continue
            where = and_(*(k == v for k, v in zip(keys, pk, strict=True)))
            session.execute(update(table).where(where).values({column.key: new}))
            changed.setdefault(table.name, set()).add(tuple(pk))
    return changed


def redact_bytes(data: bytes, address: str) -> bytes | None:
    """``data`` with ``address`` replaced, or None if it does not occur."""
    pattern = re.compile((_BEFORE + re.escape(address) + _AFTER).encode("utf-8"), re.IGNORECASE)
    new, count = pattern.subn(ERASED.encode(), data)
    return new if count else None


def redact_blob(blobs: BlobStore, sha256: str, address: str) -> tuple[str, int] | None:
    """Store a copy of blob ``sha256`` without ``address``: ``(sha256, size)``, or None
    if the blob is missing or does not mention it."""
    if not sha256 or not blobs.exists(sha256):
        return None
    new = redact_bytes(blobs.read(sha256), address)
    return blobs.put(new) if new is not None else None
