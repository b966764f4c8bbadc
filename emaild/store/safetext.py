"""Column types that store any Python text on every backend (issue 18 §5).

PostgreSQL refuses NUL in ``text`` and ``json`` values, and neither backend's
driver can encode the lone surrogates that ``surrogateescape`` makes of bytes
that are not UTF-8. Mail carries both (a NUL in a header, a raw 8-bit
address), and one such character must not turn a message into a ``451`` on
every retry. These types replace them with U+FFFD on the way in, so the same
row is stored on SQLite and PostgreSQL and the reader sees where something
unusable was. The raw message in the blob store keeps the original bytes.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.types import TypeDecorator

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable(value: str) -> str:
    """``value`` with NUL and lone surrogates replaced by U+FFFD."""
    if value.isascii() and "\x00" not in value:
        return value  # the common case: one C-speed pass, no regex
    return _UNSTORABLE.sub(REPLACEMENT, value)


def storable_json(value: Any) -> Any:
    """``value`` (JSON-like) with every string in it made ``storable``."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    if isinstance(value, dict):
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    return value


class SafeString(TypeDecorator[str]):
    """``VARCHAR(n)`` that stores NUL and lone surrogates as U+FFFD."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return storable(value) if isinstance(value, str) else value


class SafeText(TypeDecorator[str]):
    """``TEXT`` that stores NUL and lone surrogates as U+FFFD."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return storable(value) if isinstance(value, str) else value


class SafeJSON(TypeDecorator[Any]):
    """``JSON`` whose strings store NUL and lone surrogates as U+FFFD."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return storable_json(value)
