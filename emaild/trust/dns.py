"""DNS for the sender checks: bounded in time, cached, and pointable at a given server.

One ``Resolver`` serves DKIM key, SPF and DMARC lookups. Every query has one
overall time limit (``[trust] dns_timeout_seconds``): a slow or dead DNS
server makes a check ``temperror``, never a stalled worker. Answers and "no
such record" are cached (bounded entries, TTL capped), so a burst of mail
from one domain costs one lookup; temporary failures are not cached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

# "No such record" is remembered this long at most (RFC 2308 caps it at hours).
NEGATIVE_TTL_SECONDS = 300.0
# Longest TXT record emaild reads; DKIM keys and SPF records are far shorter.
MAX_TXT_BYTES = 16 * 1024


class DnsTempError(Exception):
    """The DNS did not answer in time, or answered SERVFAIL: try again later."""


@dataclass(frozen=True)
class Answer:
    """A cached answer: values as text (TXT: the strings of each record, joined)."""

    values: tuple[Any, ...]
    expires: float


class Resolver:
    """Thread-safe, time-bounded, caching lookups of A, AAAA, MX, PTR and TXT records."""

    def __init__(
        self,
        servers: list[str],
        *,
        timeout: float,
        cache_entries: int = 10_000,
        max_ttl: float = 3600.0,
    ) -> None:
        self.timeout = timeout
        self._resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            self._resolver.nameservers = [_nameserver(s) for s in servers]
        # One try per server within the overall limit, no retries on SERVFAIL.
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._resolver.retry_servfail = False
        self._cache: OrderedDict[tuple[str, str], Answer] = OrderedDict()
        self._entries = cache_entries
        self._max_ttl = max_ttl
        self._lock = threading.Lock()
        self.queries = 0  # lookups that reached the DNS (the cache's misses)

    def lookup(self, name: str, rdtype: str) -> tuple[Any, ...]:
        """The records of ``name``: () when there are none; ``DnsTempError`` on failure."""
        key = (name.lower().rstrip("."), rdtype)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit.expires > now:
                self._cache.move_to_end(key)
                return hit.values
        values, ttl = self._query(key[0], rdtype)
        with self._lock:
            if self._entries > 0:
                self._cache[key] = Answer(values, now + min(ttl, self._max_ttl))
                self._cache.move_to_end(key)
                while len(self._cache) > self._entries:
                    self._cache.popitem(last=False)
        return values

    def txt(self, name: str) -> tuple[bytes, ...]:
        """TXT records of ``name``, each record's strings joined."""
        return tuple(v for v in self.lookup(name, "TXT") if isinstance(v, bytes))

    def _query(self, name: str, rdtype: str) -> tuple[tuple[Any, ...], float]:
        self.queries += 1
        try:
            answer = self._resolver.resolve(name, rdtype, lifetime=self.timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return (), NEGATIVE_TTL_SECONDS
        except dns.resolver.NoNameservers as exc:
            raise DnsTempError(f"{name} {rdtype}: no server answered ({exc})") from None
        except dns.exception.Timeout:
            raise DnsTempError(f"{name} {rdtype}: timed out after {self.timeout}s") from None
        except (dns.name.NameTooLong, dns.name.EmptyLabel, dns.name.LabelTooLong):
            return (), NEGATIVE_TTL_SECONDS
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name} {rdtype}: {exc}") from None
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else NEGATIVE_TTL_SECONDS
        return tuple(_value(rdtype, r) for r in answer), ttl


def _value(rdtype: str, rdata: Any) -> Any:
    if rdtype == "TXT":
        return b"".join(rdata.strings)[:MAX_TXT_BYTES]
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)
    if rdtype == "MX":
        return (int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True))
    if rdtype == "PTR":
        return rdata.target.to_text(omit_final_dot=True)
    return rdata.to_text()


def _nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    """``IP`` or ``IP:PORT`` (``[v6]:PORT``) as a UDP/TCP nameserver."""
    host, port = spec, 53
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = int(p)
    return dns.nameserver.Do53Nameserver(host, port)
