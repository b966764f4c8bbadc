"""Text bound for a single line: a mail header, an SMTP reply, a notice's subject."""

from __future__ import annotations

import re

_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters: control characters
    (CR, LF, TAB...) and runs of whitespace collapse to single spaces."""
    return " ".join(_CONTROLS.sub(" ", text).split())[:limit]
