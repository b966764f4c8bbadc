"""The proof-of-work challenge: ALTCHA v2, issued and verified with ``altcha``.

A challenge is ``altcha.create_challenge`` in its deterministic mode: the
server picks a secret counter below ``challenge_max_number`` and the browser
finds it by deriving SHA-256 keys from counter 0 up (``webform.js``), so the
expected work is half of ``challenge_max_number`` hashes. The signed
parameters carry the form's name and the issue time: the minimum fill time is
measured from it, and a challenge solved for one form is refused by another.
With ``captcha = false`` the counter is 0 (one hash): the signed token stays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

import altcha

from emaild.config import WebformConfig

ALGORITHM = "SHA-256"
# A payload is a few hundred bytes; anything much larger is not one.
MAX_PAYLOAD_CHARS = 4096


def _key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"emaild webform {purpose}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Verdict:
    """The challenge check: ``status`` 0 when it passed, else the HTTP status to answer."""

    status: int
    reason: str
    key: str = ""  # the challenge's signature: one submission per challenge
    issued: float = 0.0


def issue(form: WebformConfig, secret: bytes, now: float) -> dict[str, Any]:
    """A new challenge for ``form`` as JSON (``Challenge.to_dict``)."""
    counter = secrets.randbelow(form.challenge_max_number) if form.captcha else 0
    challenge = altcha.create_challenge(
        ALGORITHM,
        1,
        counter=counter,
        expires_at=int(now) + form.challenge_ttl_seconds,
        data={"form": form.name, "issued_ms": int(now * 1000)},
        hmac_secret=_key(secret, "challenge"),
        hmac_key_secret=_key(secret, "derived key"),
    )
    return challenge.to_dict()


def verify(payload: str, form: WebformConfig, secret: bytes) -> Verdict:
    """Check a solved payload (the ``altcha`` field, base64 JSON) for ``form``."""
    if not payload.strip():
        return Verdict(400, "no challenge solution (the altcha field is empty)")
    if len(payload) > MAX_PAYLOAD_CHARS:
        return Verdict(400, "the challenge solution is not valid")
    try:
        decoded = json.loads(base64.b64decode(payload, validate=True))
        data = decoded["challenge"]["parameters"].get("data") or {}
        signature = str(decoded["challenge"]["signature"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, binascii.Error):
        return Verdict(400, "the challenge solution is not valid")
    result = altcha.verify_solution(
        payload,
        _key(secret, "challenge"),
        hmac_key_secret=_key(secret, "derived key"),
    )
    if result.expired:
        return Verdict(400, "the challenge expired: reload the form")
    if not result.verified:
        return Verdict(400, "the challenge solution is not valid")
    # Signed, so these are ours; a challenge of another form is refused.
    if not isinstance(data, dict) or data.get("form") != form.name:
        return Verdict(400, "the challenge belongs to another form")
    issued = data.get("issued_ms")
    if not isinstance(issued, int):
        return Verdict(400, "the challenge solution is not valid")
    return Verdict(0, "pass", key=signature, issued=issued / 1000)
