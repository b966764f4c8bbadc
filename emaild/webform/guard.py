"""The cheap defences, checked before a submission costs anything.

- ``RateLimiter``: a token bucket per (form, client address); IPv6 clients
  count per /64, the block one subscriber gets. Bounded in memory.
- ``ReplayGuard``: a solved challenge opens one submission; the same
  submission sent again (a double click) is let through to deduplication.
- ``origin_verdict``: the ``Origin`` (else ``Referer``) must be an allowed
  origin, by default the daemon's own.
- ``client_address``: the peer, or what a trusted proxy says it forwarded.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

# Distinct client addresses (or replay keys) remembered; the oldest go first.
MAX_TRACKED = 100_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Per-key token buckets: ``burst`` at once, then ``per_minute``."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_TRACKED
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, form: str, client: str, burst: int, per_minute: float) -> float:
        """0 when allowed (a token is taken), else the seconds until the next token."""
        now = self.clock()
        key = (form, client)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(float(burst), now)
                self._buckets[key] = bucket
                while len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                rate = per_minute / 60.0
                bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
                bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / (per_minute / 60.0)


class ReplayGuard:
    """Which challenge opened which submission, until the challenge expires."""

    def __init__(self, max_keys: int = MAX_TRACKED) -> None:
        self.max_keys = max_keys
        self._used: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: str, submission: str, expires: float, now: float) -> bool:
        """True if ``key`` is fresh (now claimed) or was claimed by this same submission."""
        with self._lock:
            while self._used:
                _, (_, until) = next(iter(self._used.items()))
                if until > now and len(self._used) < self.max_keys:
                    break
                self._used.popitem(last=False)
            seen = self._used.get(key)
            if seen is not None:
                return seen[0] == submission
            self._used[key] = (submission, expires)
            return True


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower case; "" if it has none."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower()


def origin_verdict(
    origin: str | None, referer: str | None, own: str, allowed: Sequence[str], required: bool
) -> tuple[bool, str]:
    """(allowed, what was seen) for a submission's ``Origin``/``Referer``."""
    seen = ""
    if origin and origin.strip() and origin.strip().lower() != "null":
        seen = origin_of(origin) or origin.strip()[:200]
    elif referer and referer.strip():
        seen = origin_of(referer) or referer.strip()[:200]
    elif origin and origin.strip().lower() == "null":
        return False, "null"
    if not seen:
        return (not required), "absent"
    permitted = set(allowed) if allowed else {own.lower()}
    return seen in permitted, seen


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[str]) -> str:
    """The client's address, as the rate limit counts it (IPv6 per /64)."""
    address = peer
    if trusted and forwarded_for and _in(peer, trusted):
        # The rightmost hop a trusted proxy did not add is the client.
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            address = hop
            if not _in(hop, trusted):
                break
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _in(address: str, networks: Sequence[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)
