"""Verification tokens: signed, single-use, expiring, stored only as a hash.

A token reads ``emaild-<purpose>-<nonce>-<mac>``: 80 random bits and an
HMAC-SHA256 (80 bits kept) over purpose, address and nonce, under a key
derived from the threading secret. The database keeps the token's SHA-256,
never the token, so a copy of the database cannot verify anything. A token
counts only if its row exists, its signature matches the row's address, it
has not expired and it has not been used; using it is a compare-and-set
UPDATE, so two channels delivering the same mail at once use it once.

Two purposes share the machinery: ``verify`` (``emaild address verify``)
proves that mail sent to an address reaches emaild; ``fwdtest`` marks the
message of ``emaild address test-forwarding``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from emaild.store.models import VerificationToken

VERIFY = "verify"
FORWARDING = "fwdtest"
PURPOSES = (VERIFY, FORWARDING)

# 80 random bits and an 80-bit MAC: a single-use, expiring token needs no more,
# and the header "X-Emaild-Verify: <token>" stays within 78 characters, so it is
# never folded and a script finds it with a plain grep.
NONCE_HEX = 20
MAC_HEX = 20
TOKEN_PATTERN = re.compile(
    rf"emaild-(verify|fwdtest)-([0-9a-f]{{{NONCE_HEX}}})-([0-9a-f]{{{MAC_HEX}}})",
    re.IGNORECASE,
)
# Every token starts with this (``TOKEN_PATTERN``, matched ignoring case).
TOKEN_MARK = "emaild-"
# Our headers on verification and forwarding-test mail.
VERIFY_HEADER = "X-Emaild-Verify"
TEST_HEADER = "X-Emaild-Test"
# A domain separator: the same secret also signs case references (correlation.tokens).
_KEY_LABEL = b"emaild address verification token v1"


class TokenSigner:
    """Makes tokens and checks their signature for an address."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()

    def _mac(self, purpose: str, address: str, nonce: str) -> str:
        message = f"{purpose}\x00{address.lower()}\x00{nonce}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:MAC_HEX]

    def make(self, purpose: str, address: str) -> str:
        """A fresh token for ``purpose`` and ``address``."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        nonce = secrets.token_hex(NONCE_HEX // 2)
        return f"emaild-{purpose}-{nonce}-{self._mac(purpose, address, nonce)}"

    def signed_for(self, token: str, address: str) -> bool:
        """True if ``token`` is well formed and signed for ``address``."""
        match = TOKEN_PATTERN.fullmatch(token.strip())
        if match is None:
            return False
        purpose, nonce, mac = (g.lower() for g in match.groups())
        return hmac.compare_digest(mac, self._mac(purpose, address, nonce))


def token_hash(token: str) -> str:
    """What the database stores: the SHA-256 of the (lower-cased) token."""
    return hashlib.sha256(token.strip().lower().encode("ascii", "replace")).hexdigest()


def may_carry_token(text: str) -> bool:
    """False only if ``TOKEN_PATTERN`` cannot match ``text`` (a cheap test first)."""
    low = text.lower()
    # re's IGNORECASE also takes dotless "ı" and "İ" (lower: "i" + U+0307) for "i".
    return TOKEN_MARK in low or "\u0131" in low or "\u0307" in low


def find_tokens(texts: Iterable[str]) -> list[str]:
    """Every distinct token in ``texts`` (headers, subject, bodies), in order of appearance."""
    seen: dict[str, None] = {}
    for text in texts:
        for match in TOKEN_PATTERN.finditer(text or ""):
            seen.setdefault(match.group(0).lower(), None)
    return list(seen)


def issue(
    session: Session,
    signer: TokenSigner,
    *,
    address: str,
    purpose: str,
    now: datetime,
    ttl: timedelta,
) -> tuple[str, VerificationToken]:
    """Create a token in the caller's transaction; only its hash is stored."""
    token = signer.make(purpose, address)
    row = VerificationToken(
        address=address.lower(),
        purpose=purpose,
        token_hash=token_hash(token),
        created_at=now,
        expires_at=now + ttl,
        used_at=None,
        used_via="",
    )
    session.add(row)
    session.flush()
    return token, row


class Verdict(enum.Enum):
    """What checking a token found."""

    VALID = "valid"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"  # no such token: forged, mistyped, or from another installation
    FORGED = "forged"  # a row exists but the signature does not match its address
    WRONG_ADDRESS = "wrong address"
    WRONG_PURPOSE = "wrong purpose"
    EXPIRED = "expired"
    USED = "already used"


@dataclass(frozen=True)
class TokenCheck:
    """The verdict on one token and, when its row exists, that row's facts."""

    verdict: Verdict
    token_id: int | None = None
    address: str = ""
    purpose: str = ""
    created_at: datetime | None = None
    used_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.VALID

    @property
    def genuine(self) -> bool:
        """Issued by this emaild (row and signature match), whether or not still usable."""
        return self.verdict in (Verdict.VALID, Verdict.EXPIRED, Verdict.USED)


def use(
    session: Session,
    signer: TokenSigner,
    token: str,
    *,
    now: datetime,
    via: str,
    address: str | None = None,
    purpose: str | None = None,
) -> TokenCheck:
    """Check ``token`` and, if it is valid, mark it used (in the caller's transaction).

    ``address``/``purpose``, when given, must match the token's. Only one caller
    ever gets ``VALID`` for a token, however many race for it.
    """
    token = token.strip().lower()
    if TOKEN_PATTERN.fullmatch(token) is None:
        return TokenCheck(Verdict.MALFORMED)
    if address is not None and not signer.signed_for(token, address):
        # Checked before the lookup so a guess for another address learns nothing.
        return TokenCheck(Verdict.WRONG_ADDRESS, address=address.lower())
    row = session.scalars(
        select(VerificationToken).where(VerificationToken.token_hash == token_hash(token))
    ).first()
    if row is None:
        return TokenCheck(Verdict.UNKNOWN)
    facts: dict[str, Any] = {
        "token_id": row.id,
        "address": row.address,
        "purpose": row.purpose,
        "created_at": row.created_at,
        "used_at": row.used_at,
    }
    if not signer.signed_for(token, row.address) or not token.startswith(f"emaild-{row.purpose}-"):
        return TokenCheck(Verdict.FORGED, **facts)
    if purpose is not None and row.purpose != purpose:
        return TokenCheck(Verdict.WRONG_PURPOSE, **facts)
    if row.used_at is not None:
        return TokenCheck(Verdict.USED, **facts)
    if row.expires_at <= now:
        return TokenCheck(Verdict.EXPIRED, **facts)
    claimed: Any = session.execute(
        update(VerificationToken)
        .where(VerificationToken.id == row.id, VerificationToken.used_at.is_(None))
        .values(used_at=now, used_via=via[:32])
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        return TokenCheck(Verdict.USED, **facts)
    session.expire(row)
    return TokenCheck(Verdict.VALID, **{**facts, "used_at": now})
