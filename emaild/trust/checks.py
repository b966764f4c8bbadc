"""emaild's own SPF, DKIM and DMARC checks, for mail straight from the internet.

When emaild's SMTP listener faces the internet there is no MTA in front to
write a trusted ``Authentication-Results``; ``Checker`` does the checks
itself: SPF for the client IP, HELO and MAIL FROM (``pyspf``), every DKIM
signature up to a limit (``dkimpy``), and DMARC (the ``_dmarc`` policy record
and alignment, RFC 7489). All DNS goes through one bounded, caching
``Resolver``: a DNS timeout gives ``temperror``, never a stalled message.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dkim
import spf

from emaild.config import Config
from emaild.trust.direct import Connection
from emaild.trust.dns import DnsTempError, Resolver
from emaild.trust.results import AuthVerdict, judge, normalise, org_domain

# Signatures checked per message: more is a cost attack, not more assurance.
MAX_SIGNATURES = 5
# SPF gets at most this many DNS round trips' worth of time in all (RFC 7208 4.6.4
# limits lookups to 10; time-boxing them keeps a message's check bounded).
SPF_TIME_FACTOR = 3

_resolver: contextvars.ContextVar[Resolver] = contextvars.ContextVar("emaild_spf_resolver")


def build_checker(config: Config) -> Checker | None:
    """The checker ``[trust] own_checks`` asks for, with its own DNS cache; else None."""
    trust = config.trust
    if not trust.own_checks:
        return None
    resolver = Resolver(
        trust.dns_servers,
        timeout=trust.dns_timeout_seconds,
        cache_entries=trust.dns_cache_entries,
        max_ttl=trust.dns_cache_max_ttl_seconds,
    )
    return Checker(resolver)


class Checker:
    """SPF, DKIM and DMARC for one message, through ``resolver``."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    def check(self, raw: bytes, conn: Connection, from_addr: str) -> AuthVerdict:
        from_domain = from_addr.rpartition("@")[2].lower()
        spf_result, spf_domain = self._spf(conn)
        signatures = self._dkim(raw)
        dmarc, policy = self._dmarc(from_domain, (spf_result, spf_domain), signatures)
        by_method = {
            "spf": [(spf_result, spf_domain)],
            "dkim": signatures,
            "dmarc": [(dmarc, from_domain)],
        }
        outcome = judge(by_method, from_domain)
        return AuthVerdict(
            spf=outcome["spf"],
            dkim=outcome["dkim"],
            dmarc=outcome["dmarc"],
            source="checked",
            authenticated=outcome["authenticated"] == "yes",
            why=outcome["why"] + (f" (policy {policy})" if policy else ""),
        )

    # --- SPF -------------------------------------------------------------------
    def _spf(self, conn: Connection) -> tuple[str, str]:
        sender = conn.mail_from.strip("<> ")
        domain = sender.rpartition("@")[2].lower() if sender else conn.helo.lower()
        if not conn.ip or not domain:
            return "none", domain
        timeout = self.resolver.timeout
        token = _resolver.set(self.resolver)
        try:
            query = spf.query(
                i=conn.ip,
                s=sender or f"postmaster@{conn.helo}",
                h=conn.helo or domain,
                timeout=timeout,
                querytime=timeout * SPF_TIME_FACTOR,
            )
            result = query.check()[0]
        except spf.TempError:
            result = "temperror"
        except spf.PermError:
            result = "permerror"
        finally:
            _resolver.reset(token)
        return normalise(str(result)), domain

    # --- DKIM ------------------------------------------------------------------
    def _dkim(self, raw: bytes) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        verifier = dkim.DKIM(raw, timeout=int(max(1, self.resolver.timeout)))
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
        for idx in range(min(count, MAX_SIGNATURES)):
            verifier.domain = None
            try:
                ok = verifier.verify(idx=idx, dnsfunc=self._dkim_key)
                result = "pass" if ok else "fail"
            except DnsTempError:
                result = "temperror"
            except dkim.ValidationError:
                result = "fail"  # a wrong body hash: the message was changed (RFC 6376 6.1.3)
            except dkim.DKIMException:
                result = "permerror"
            domain = verifier.domain.decode("ascii", "replace") if verifier.domain else ""
            found.append((result, domain.lower()))
        return found

    def _dkim_key(self, name: bytes, timeout: int = 5) -> bytes | None:
        records = self.resolver.txt(name.decode("ascii", "replace"))
        return records[0] if records else None

    # --- DMARC -----------------------------------------------------------------
    def _dmarc(
        self, from_domain: str, spf_hit: tuple[str, str], signatures: list[tuple[str, str]]
    ) -> tuple[str, str]:
        """``(result, policy)`` for the From domain (RFC 7489 6.6.3 record discovery)."""
        if not from_domain:
            return "none", ""
        try:
            record = self._dmarc_record(from_domain)
        except DnsTempError:
            return "temperror", ""
        if record is None:
            return "none", ""
        if "p" not in record:
            return "permerror", ""
        policy = record["p"]
        strict_dkim, strict_spf = record.get("adkim") == "s", record.get("aspf") == "s"
        for result, domain in signatures:
            if result == "pass" and _dmarc_aligned(domain, from_domain, strict=strict_dkim):
                return "pass", policy
        spf_result, spf_domain = spf_hit
        if spf_result == "pass" and _dmarc_aligned(spf_domain, from_domain, strict=strict_spf):
            return "pass", policy
        if spf_result == "temperror" or any(r == "temperror" for r, _ in signatures):
            return "temperror", policy
        return "fail", policy

    def _dmarc_record(self, domain: str) -> dict[str, str] | None:
        for name in dict.fromkeys((domain, org_domain(domain))):
            if not name:
                continue
            records = [r for r in self.resolver.txt(f"_dmarc.{name}") if _is_dmarc(r)]
            if len(records) == 1:
                return _tags(records[0].decode("ascii", "replace"))
            if records:
                return None  # several records: RFC 7489 6.6.3 says none applies
        return None


# pyspf takes no resolver argument: its module-level lookup is routed through the
# Resolver of the check running in this thread (bounded, cached, test-pointable).
def _spf_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = 30) -> list[Any]:
    resolver = _resolver.get()
    try:
        values = resolver.lookup(name, qtype)
    except DnsTempError as exc:
        raise spf.TempError(str(exc)) from None
    if qtype in ("TXT", "SPF"):
        # pyspf expects each TXT record as a list of byte strings.
        return [((name, qtype), [v]) for v in values]
    return [((name, qtype), v) for v in values]


spf.DNSLookup = _spf_lookup


@contextmanager
def using(resolver: Resolver) -> Iterator[None]:
    """Route pyspf lookups through ``resolver`` for the block (tests of SPF alone)."""
    token = _resolver.set(resolver)
    try:
        yield
    finally:
        _resolver.reset(token)


def _is_dmarc(record: bytes) -> bool:
    return record.replace(b" ", b"").lower().startswith(b"v=dmarc1")


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip().lower()
    return tags


def _dmarc_aligned(domain: str, from_domain: str, *, strict: bool) -> bool:
    if strict:
        return domain.strip(".").lower() == from_domain.strip(".").lower()
    org = org_domain(domain)
    return bool(org) and org == org_domain(from_domain)
