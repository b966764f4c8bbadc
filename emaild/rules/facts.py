"""What a rule can look at: one message's facts, computed lazily and cached.

A rule file names *fields* (``subject``, ``from_domain``, ``header = "X-Priority"``
...). ``MessageFacts`` answers each field as a tuple of strings (every field may
have several values: recipients, attachment names, repeated headers) or as a
number, computing it on first use so 1,000 rules that read the subject decode
and lower-case it once. Text is cut to a bounded length before any operator
sees it, which bounds the cost of every regex (see ``conditions``).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emaild.classify import Classification
    from emaild.config import RoutingAddress
    from emaild.mime.parse import ParsedMessage

# Longest text an operator sees. Subjects and headers beyond 4 KiB and bodies
# beyond 64 KiB are noise for routing, and the cap keeps regex time bounded.
MAX_HEADER_CHARS = 4096
MAX_BODY_CHARS = 64 * 1024
# Regex searches run with a time limit, each and in total per message: a
# pattern that is slow on some input makes its condition false (recorded in
# the trace) instead of stalling the worker.
REGEX_TIMEOUT_SECONDS = 0.05
REGEX_BUDGET_SECONDS = 0.25

_TAG = re.compile(r"<[^<>]{0,2000}>")
# Auto-Submitted: auto-replied and the X-Autoreply family, as opposed to
# auto-generated notifications (monitoring alerts, cron mail), which may be
# exactly what a support address is for.
_AUTO_REPLIED = re.compile(r"auto-?repl|autorespond", re.I)
_SCORE = re.compile(r"score\s*=\s*(-?\d+(?:\.\d+)?)", re.I)

# Resolves an address to the canonical routing address it reaches, or None.
Resolver = Callable[[str], str | None]


TEXT_FIELDS: dict[str, str] = {
    "from": "From header address (lower case)",
    "from_name": "From header display name",
    "from_domain": "domain of the From address",
    "sender": "envelope sender (MAIL FROM); empty for channels that have none",
    "to": "To addresses",
    "cc": "Cc addresses",
    "recipients": "To and Cc addresses",
    "addressed_to": "routing addresses (aliases resolved) found in the envelope, To and Cc",
    "routing_address": "the routing address chosen for the message",
    "subject": "decoded subject",
    "body": "plain-text body (HTML with tags removed when there is no text part)",
    "attachment_name": "file name of each attachment",
    "attachment_type": "content type of each attachment, e.g. application/pdf",
    "charset": "MIME charsets used in the message, e.g. iso-2022-jp",
    "language": "Content-Language header values, e.g. de, en-gb",
    "channel": "how the message arrived: smtp, lmtp, imap, pipe, import",
    "auth.spf": "SPF result: pass, fail, softfail, neutral, none, temperror, permerror",
    "auth.dkim": "DKIM result (the best signature's), same values as auth.spf",
    "auth.dmarc": "DMARC result, same values as auth.spf",
    "auth.source": "where the auth results came from: header, checked (own checks) or none",
    "auth.authenticated": "yes when the From domain is authenticated (DMARC, else aligned pass)",
    "forwarded_by": "the internal sender who forwarded a customer's message ([trust])",
    "spam.flag": "yes/no: spam by the rspamd scan, else by upstream headers; unscanned",
}
NUMBER_FIELDS: dict[str, str] = {
    "size": "raw message size in bytes",
    "attachment_count": "number of attachments",
    "spam_score": "X-Spam-Score, or score= in X-Spam-Status (no header: never matches)",
    "spam.score": "the same spam score as spam_score",
}
FLAGS: dict[str, str] = {
    "reply": "a reply (In-Reply-To/References, or a Re:/AW:/SV: subject)",
    "auto_reply": "an auto-reply: out-of-office, vacation, Auto-Submitted: auto-replied",
    "auto_generated": "Auto-Submitted: auto-generated and similar (alerts, notifications)",
    "bounce": "a bounce or delivery status notification",
    "report": "a disposition notification (read receipt) or abuse feedback report",
    "bulk": "list or bulk mail (Precedence, List-Id, List-Unsubscribe)",
    "auto": "machine-generated in any of the ways above",
    "spam": "flagged as spam by an upstream filter (X-Spam-Flag: YES, X-Spam-Status: Yes, ...)",
    "has_attachment": "has at least one attachment",
    "null_sender": "null return path (<>): envelope sender on SMTP/LMTP, else Return-Path",
}


class MessageFacts:
    """The fields of one message, each computed once on first use."""

    __slots__ = (
        "_budget",
        "_cache",
        "_headers",
        "_lower",
        "classification",
        "parsed",
        "resolve",
        "routing",
        "timeouts",
    )

    def __init__(
        self,
        parsed: ParsedMessage,
        classification: Classification | None = None,
        routing: RoutingAddress | None = None,
        *,
        channel: str = "",
        envelope_from: str = "",
        envelope_to: tuple[str, ...] = (),
        resolve: Resolver | None = None,
        verdicts: Mapping[str, str] | None = None,
    ) -> None:
        self.parsed = parsed
        self.classification = classification
        self.routing = routing
        self.resolve = resolve
        self._cache: dict[str, tuple[str, ...]] = {
            "channel": (channel,) if channel else (),
            "sender": (envelope_from.lower(),) if envelope_from else (),
            "_envelope_to": tuple(a.lower() for a in envelope_to),
            # Decided before the rules run (emaild.trust): auth.*, and spam.* when
            # a scanner ran (else spam.* come from upstream headers).
            **{
                key: (value,)
                for key, value in (verdicts or {}).items()
                if key in TEXT_FIELDS or key in NUMBER_FIELDS
            },
        }
        self._lower: dict[str, tuple[str, ...]] = {}
        self._headers: dict[str, tuple[str, ...]] | None = None
        self._budget = REGEX_BUDGET_SECONDS
        # Regex searches that hit the time limit: "pattern on field".
        self.timeouts: list[str] = []

    # --- text -----------------------------------------------------------------
    def values(self, key: str) -> tuple[str, ...]:
        """The values of field ``key`` (``header:name`` for a header), as written."""
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._compute(key)
        return found

    def lowered(self, key: str) -> tuple[str, ...]:
        """``values(key)`` in lower case (the default for case-insensitive operators)."""
        found = self._lower.get(key)
        if found is None:
            found = self._lower[key] = tuple(v.lower() for v in self.values(key))
        return found

    def _compute(self, key: str) -> tuple[str, ...]:
        if key.startswith("header:"):
            return self._header_map().get(key[7:], ())
        p = self.parsed
        if key == "from":
            return (p.from_addr,) if p.from_addr else ()
        if key == "from_name":
            return (p.from_.name,) if p.from_ and p.from_.name else ()
        if key == "from_domain":
            return (p.from_addr.rpartition("@")[2],) if "@" in p.from_addr else ()
        if key == "to":
            return tuple(a.addr for a in p.to)
        if key == "cc":
            return tuple(a.addr for a in p.cc)
        if key == "recipients":
            return self.values("to") + self.values("cc")
        if key == "addressed_to":
            return self._addressed_to()
        if key == "routing_address":
            return (self.routing.address,) if self.routing else ()
        if key == "subject":
            return (p.subject[:MAX_HEADER_CHARS],)
        if key == "body":
            return (_body(p.text, p.html),)
        if key == "attachment_name":
            return tuple(a.filename for a in p.attachments if a.filename)
        if key == "attachment_type":
            return tuple(a.content_type for a in p.attachments)
        if key == "charset":
            return tuple(p.charsets)
        if key.startswith("auth.") or key == "forwarded_by":
            return ()  # no verdict was handed in (a caller outside the pipeline)
        if key == "spam.flag":
            return ("yes" if _is_spam(self._header_map()) else "no",)
        if key == "language":
            langs = ",".join(p.header_all("content-language"))
            return tuple(x.strip() for x in langs.split(",") if x.strip())
        raise KeyError(key)  # the loader only lets known fields through

    def _header_map(self) -> dict[str, tuple[str, ...]]:
        if self._headers is None:
            grouped: dict[str, list[str]] = {}
            for name, value in self.parsed.headers:
                grouped.setdefault(name.lower(), []).append(value[:MAX_HEADER_CHARS])
            self._headers = {k: tuple(v) for k, v in grouped.items()}
        return self._headers

    def _addressed_to(self) -> tuple[str, ...]:
        if self.resolve is None:
            return self.values("routing_address")
        found: dict[str, None] = {}
        for addr in self._cache["_envelope_to"] + self.values("recipients"):
            routing = self.resolve(addr)
            if routing is not None:
                found[routing] = None
        if self.routing is not None:
            found.setdefault(self.routing.address, None)
        return tuple(found)

    def _null_sender(self) -> bool:
        # RFC 5321 4.5.5: only bounces and other automatic notices use <>.
        if self.values("channel") in (("smtp",), ("lmtp",)):
            return not self.values("sender")
        return any(v.strip() == "<>" for v in self._header_map().get("return-path", ()))

    def search(self, pattern: Any, text: str, label: str) -> bool:
        """``pattern.search(text)`` within the time limits; a timeout is no match."""
        if self._budget <= 0:
            self.timeouts.append(f"{pattern.pattern!r} on {label}: regex time budget spent")
            return False
        limit = min(REGEX_TIMEOUT_SECONDS, self._budget)
        start = time.perf_counter()
        try:
            return pattern.search(text, timeout=limit) is not None
        except TimeoutError:
            self.timeouts.append(f"{pattern.pattern!r} on {label}: over {limit:.3f}s")
            return False
        finally:
            self._budget -= time.perf_counter() - start

    # --- numbers and flags ------------------------------------------------------
    def number(self, key: str) -> float | None:
        """A numeric field, or None when the message does not have it."""
        p = self.parsed
        if key == "size":
            return float(p.size)
        if key == "attachment_count":
            return float(len(p.attachments))
        if key in ("spam_score", "spam.score"):
            scanned = self._cache.get("spam.score")
            if scanned:
                return float(scanned[0])
            return _spam_score(self._header_map())
        raise KeyError(key)

    def flag(self, name: str) -> bool:
        """Whether the message has property ``name`` (see ``FLAGS``)."""
        c = self.classification
        if name == "has_attachment":
            return bool(self.parsed.attachments)
        if name == "spam":
            scanned = self._cache.get("spam.flag")
            return scanned == ("yes",) if scanned else _is_spam(self._header_map())
        if name == "null_sender":
            return self._null_sender()
        if c is None:
            return False
        if name == "reply":
            return c.is_reply
        if name == "auto_reply":
            return bool(c.vacation) or bool(_AUTO_REPLIED.search(c.auto_submitted))
        if name == "auto_generated":
            return bool(c.auto_submitted) and not _AUTO_REPLIED.search(c.auto_submitted)
        if name == "bounce":
            return c.is_bounce
        if name == "report":
            return bool(c.report)
        if name == "bulk":
            return bool(c.bulk)
        if name == "auto":
            return c.is_auto
        raise KeyError(name)


def _body(text: str, html_body: str) -> str:
    if text.strip():
        return text[:MAX_BODY_CHARS]
    # Tags removed on a bounded prefix: a rule matches words, not markup.
    stripped = _TAG.sub(" ", html_body[: MAX_BODY_CHARS * 4])
    return " ".join(html.unescape(stripped).split())[:MAX_BODY_CHARS]


def _is_spam(headers: dict[str, tuple[str, ...]]) -> bool:
    for name in ("x-spam-flag", "x-spam", "x-spam-status", "x-barracuda-spam-status"):
        for value in headers.get(name, ()):
            if value.strip().lower().startswith(("yes", "true")):
                return True
    for value in headers.get("x-ms-exchange-organization-scl", ()):
        # Exchange's spam confidence level: 5 and above is treated as spam.
        if value.strip().lstrip("-").isdigit() and int(value.strip()) >= 5:
            return True
    return False


def _spam_score(headers: dict[str, tuple[str, ...]]) -> float | None:
    for value in headers.get("x-spam-score", ()):
        try:
            return float(value.strip().split()[0])
        except (ValueError, IndexError):
            continue
    for value in headers.get("x-spam-status", ()):
        match = _SCORE.search(value)
        if match:
            return float(match.group(1))
    return None
