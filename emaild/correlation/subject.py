"""Subjects for display: without reply/forward prefixes, tags and our case token.

Used only to show a case's subject. Matching never uses a subject by itself
(two customers can both write "Printer broken"); only a case tag in it counts,
and only under the rules in ``emaild.correlation.match``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Reply and forward markers of common clients and languages, optionally
# counted ("Re[2]:", "RE(3):"), full-width colon included.
_REPLY_FORWARD = (
    r"re|aw|sv|antw|odp|ynt|r|rif|res|"
    r"fw|fwd|wg|vs|tr|rv|enc|doorst|i|"
    r"回复|回覆|答复|转发|轉寄|轉發"
)
_PREFIX = re.compile(
    r"^\s*(?:"
    rf"(?:{_REPLY_FORWARD})\s*(?:\[\d+\]|\(\d+\))?\s*[:：]"
    # Gateway banners: [External], [EXT], *EXTERNAL*, [SPAM], [Suspicious]...
    r"|\[(?:external|ext|extern|externe?|spam|suspected spam|suspicious|warning|caution)"
    r"(?:[^\]]{0,40})\]"
    r"|\*+\s*(?:external|spam)\s*\*+:?"
    r"|external\s*:"
    r")\s*",
    re.IGNORECASE,
)


def strip_prefixes(subject: str) -> str:
    """``subject`` without leading Re:/AW:/Fwd:/[External]-style prefixes, repeatedly."""
    subject = " ".join(subject.split())
    while True:
        shorter = _PREFIX.sub("", subject, count=1)
        if shorter == subject:
            return subject
        subject = shorter


def display_subject(subject: str, strip_tokens: Callable[[str], str] | None = None) -> str:
    """The subject to show for a case: prefixes and (with ``strip_tokens``) our tags gone.

    ``strip_tokens`` is a function removing case tags (``CaseSigner.strip_subject_tokens``).
    Falls back to the original when nothing would be left.
    """
    shown = strip_prefixes(subject)
    if strip_tokens is not None:
        # A tag can sit between prefixes ("Re: [Case #12] AW: ..."): strip both again.
        shown = strip_prefixes(strip_tokens(shown))
    return shown or " ".join(subject.split())
