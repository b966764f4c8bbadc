"""Trusted ``Authentication-Results`` (RFC 8601) into one ``AuthVerdict``.

Anyone can write an ``Authentication-Results`` header into a message before
sending it; only the copies added by the MTAs the admin names
(``[trust] authserv_ids``) say anything. The topmost trusted copy wins: it was
added last, by the server closest to emaild. Copies from other authserv-ids
are ignored and listed, so a forgery attempt is visible in the trace.

"Authenticated" follows DMARC: a DMARC ``pass`` is enough and a DMARC ``fail``
is never overruled. Without a DMARC result, an SPF or DKIM ``pass`` counts
only for a domain aligned with the ``From`` domain (relaxed alignment), since
an attacker can pass SPF and DKIM for a domain of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import authres

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
METHODS = ("spf", "dkim", "dmarc")
# RFC 8601 and older producers use a few more words; each maps onto RESULTS.
_SYNONYMS = {"hardfail": "fail", "policy": "neutral", "unknown": "permerror", "error": "temperror"}
# The best of several results for one method (several DKIM signatures).
_ORDER = ("pass", "neutral", "softfail", "none", "temperror", "permerror", "fail")
_RANK = {r: i for i, r in enumerate(_ORDER)}
# Longest header emaild parses; a real one is a few hundred bytes.
MAX_HEADER_CHARS = 8192
# Copies of ignored headers listed in the trace; more is an attack, not news.
MAX_LISTED = 10


@dataclass(frozen=True)
class AuthVerdict:
    """SPF, DKIM and DMARC results for one message, and where they came from."""

    spf: str = "none"
    dkim: str = "none"
    dmarc: str = "none"
    source: str = "none"  # "header" (a trusted A-R), "checked" (emaild's own), "none"
    authenticated: bool = False
    why: str = "no trusted authentication results"
    authserv_id: str = ""
    # authserv-ids of the Authentication-Results copies nobody vouches for.
    ignored: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, str]:
        """The ``auth`` object of ``emaild cases show --json`` (a stable interface)."""
        return {"spf": self.spf, "dkim": self.dkim, "dmarc": self.dmarc, "source": self.source}

    def evidence(self) -> dict[str, Any]:
        """Everything for the decision trace: ``auth`` plus why and what was ignored."""
        out: dict[str, Any] = {"auth": self.as_json(), "why": self.why}
        if self.authserv_id:
            out["authserv_id"] = self.authserv_id
        if self.ignored:
            out["ignored_authserv_ids"] = list(self.ignored)
        if self.problems:
            out["problems"] = list(self.problems)
        return out

    def facts(self) -> dict[str, str]:
        """The rule-visible ``auth.*`` values."""
        return {
            "auth.spf": self.spf,
            "auth.dkim": self.dkim,
            "auth.dmarc": self.dmarc,
            "auth.source": self.source,
            "auth.authenticated": "yes" if self.authenticated else "no",
        }


def verdict_from_headers(
    headers: Iterable[str], trusted_ids: Iterable[str], from_addr: str
) -> AuthVerdict:
    """The verdict of the topmost ``Authentication-Results`` value from a trusted id."""
    trusted = {t.lower() for t in trusted_ids}
    ignored: list[str] = []
    problems: list[str] = []
    chosen: Any = None
    for value in headers:
        parsed = _parse(value, problems)
        if parsed is None:
            continue
        serv = str(parsed.authserv_id or "").lower()
        if serv not in trusted:
            if len(ignored) < MAX_LISTED:
                ignored.append(serv[:255] or "(empty)")
            continue
        if chosen is None:
            chosen = parsed
    if chosen is None:
        return AuthVerdict(ignored=tuple(ignored), problems=tuple(problems[:MAX_LISTED]))
    by_method = _results(chosen)
    verdict = judge(by_method, _domain(from_addr))
    return AuthVerdict(
        spf=verdict["spf"],
        dkim=verdict["dkim"],
        dmarc=verdict["dmarc"],
        source="header",
        authenticated=verdict["authenticated"] == "yes",
        why=verdict["why"],
        authserv_id=str(chosen.authserv_id).lower(),
        ignored=tuple(ignored),
        problems=tuple(problems[:MAX_LISTED]),
    )


def judge(by_method: dict[str, list[tuple[str, str]]], from_domain: str) -> dict[str, str]:
    """Per-method result (best of several) and whether the From domain is authenticated.

    ``by_method`` maps spf/dkim/dmarc to ``(result, domain)`` pairs, the domain
    being SPF's MAIL FROM (or HELO) domain and DKIM's ``d=``.
    """
    out = {m: _best(r for r, _ in by_method.get(m, [])) for m in METHODS}
    dmarc = out["dmarc"]
    if dmarc == "pass":
        out["authenticated"], out["why"] = "yes", "dmarc=pass"
    elif dmarc == "fail":
        out["authenticated"], out["why"] = "no", "dmarc=fail"
    else:
        for method in ("dkim", "spf"):
            found = by_method.get(method, [])
            hits = [d for r, d in found if r == "pass" and aligned(d, from_domain)]
            if hits:
                out["authenticated"] = "yes"
                out["why"] = f"{method}=pass for {hits[0]}, aligned with From {from_domain}"
                break
        else:
            out["authenticated"] = "no"
            shown = from_domain or "(none)"
            out["why"] = f"no dmarc result and no spf/dkim pass aligned with From {shown}"
    return out


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment (RFC 7489 3.1): the same organizational domain.

    A public suffix (``com``, ``co.uk``) has no organizational domain and is
    never aligned: nobody holds DKIM keys or SPF records for all of ``com``.
    """
    org = org_domain(domain)
    return bool(org) and org == org_domain(from_domain)


def org_domain(domain: str) -> str:
    """The organizational domain (public suffix plus one label), "" for a suffix itself."""
    name = domain.strip().strip(".").lower()
    if not name or "." not in name:
        return ""
    return str(_suffixes().privatesuffix(name) or "")


@cache
def _suffixes() -> Any:
    # The Public Suffix List ships with the package: no download at run time.
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def normalise(result: str) -> str:
    """``result`` as one of ``RESULTS``."""
    value = result.strip().lower()
    value = _SYNONYMS.get(value, value)
    return value if value in RESULTS else "permerror"


# --- parsing -------------------------------------------------------------------
def _parse(value: str, problems: list[str]) -> Any:
    text = " ".join(value[:MAX_HEADER_CHARS].split())
    try:
        return authres.AuthenticationResultsHeader.parse_value(text)
    except (authres.AuthResError, ValueError, IndexError) as exc:
        if len(problems) < MAX_LISTED:
            problems.append(f"unparsable Authentication-Results: {exc}"[:300])
        return None


def _results(header: Any) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for result in header.results or ():
        method = str(getattr(result, "method", "") or "").lower()
        if method not in METHODS:
            continue
        props = {
            f"{p.type}.{p.name}".lower(): str(p.value or "")
            for p in getattr(result, "properties", None) or ()
        }
        if method == "dkim":
            domain = props.get("header.d", "") or _domain(props.get("header.i", ""))
        elif method == "spf":
            domain = _domain(props.get("smtp.mailfrom", "")) or props.get("smtp.helo", "")
        else:
            domain = props.get("header.from", "")
        found.setdefault(method, []).append((normalise(str(result.result or "")), domain))
    return found


def _best(results: Iterable[str]) -> str:
    ranked = sorted(results, key=lambda r: _RANK.get(r, len(_RANK)))
    return ranked[0] if ranked else "none"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().strip("<>").lower() if address else ""
