"""The signed ``X-Emaild-Web`` header: what the form decided, carried in the message.

The header holds JSON: the form's name, the case fields it chose (origin,
priority, tags, template...) and what each defence found. It is signed with
a key derived from the threading secret, so the ``route`` stage believes it
only in a message emaild built itself: the same header in mail from outside
is ignored. Carried in the raw bytes, it survives quarantine and release.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

HEADER = "X-Emaild-Web"
# The case fields a stamp may set.
FIELDS = ("origin", "priority", "category", "owner", "tags", "auto_response")


def _mac(secret: bytes, body: dict[str, Any]) -> str:
    key = hmac.new(secret, b"emaild webform stamp", hashlib.sha256).digest()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def make(secret: bytes, form: str, fields: dict[str, Any], defences: dict[str, Any]) -> str:
    """The header value (ASCII JSON with spaces, so it folds without encoding)."""
    body = {"form": form, "fields": fields, "defences": defences}
    return json.dumps({**body, "sig": _mac(secret, body)}, sort_keys=True, ensure_ascii=True)


def read(secret: bytes, value: str | None) -> dict[str, Any] | None:
    """The stamp's content if ``value`` is one emaild signed, else None."""
    if not value or len(value) > 16384:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sig"), str):
        return None
    sig = data.pop("sig")
    if set(data) != {"form", "fields", "defences"} or not hmac.compare_digest(
        sig, _mac(secret, data)
    ):
        return None
    if not isinstance(data["fields"], dict) or not isinstance(data["defences"], dict):
        return None
    return data
