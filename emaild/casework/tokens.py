"""API tokens: made once, shown once, stored as a sha256 (``emaild token``)."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.errors import InputError
from emaild.store.models import ApiToken

# Each scope includes the ones before it.
SCOPES = ("read", "write", "admin")
PREFIX = "emaild_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def token_hash(token: str) -> str:
    # The token is 256 random bits: a plain hash is enough (no dictionary to guess from).
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def allows(scope: str, needed: str) -> bool:
    return scope in SCOPES and SCOPES.index(scope) >= SCOPES.index(needed)


def add_token(session: Session, name: str, scope: str, now: datetime) -> str:
    """Create token ``name``; returns the secret (it cannot be shown again)."""
    if not _NAME.match(name):
        raise InputError(f"token name {name!r}: letters, digits, '.', '_', '-' (max 64)")
    if name == "cli" or name == "mail":
        raise InputError(f"token name {name!r} is reserved (it names other actors)")
    if scope not in SCOPES:
        raise InputError(f"scope: one of {', '.join(SCOPES)}")
    if session.scalars(select(ApiToken).where(ApiToken.name == name)).first() is not None:
        raise InputError(f"a token named {name!r} exists; revoke it first")
    secret = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, scope=scope, token_hash=token_hash(secret), created_at=now))
    session.flush()
    return secret


def revoke_token(session: Session, name: str) -> None:
    """Revoke ``name`` (the row goes: the name is free for a new token)."""
    row = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        raise InputError(f"no token named {name!r}")
    session.delete(row)


def find_token(session: Session, secret: str) -> ApiToken | None:
    """The live token with this secret, if any."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    return session.scalars(
        select(ApiToken).where(ApiToken.token_hash == token_hash(secret))
    ).first()


def list_tokens(session: Session) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "scope": t.scope, "created_at": t.created_at.isoformat()}
        for t in session.scalars(select(ApiToken).order_by(ApiToken.name))
    ]
