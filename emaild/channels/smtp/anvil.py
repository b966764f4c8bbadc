"""Per-client-address connection limits, after Postfix's anvil (issue 18 §3).

One address may hold at most ``smtp.max_connections_per_ip`` sessions and
open at most ``smtp.max_connection_rate_per_ip`` per minute; so a flood or
a slowloris from one address fills its own allowance, never the listener,
and a client from anywhere else is still served. Runs on the event loop;
memory is bounded by forgetting addresses with no session and no recent
connection (and the oldest ones beyond ``MAX_TRACKED``).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

WINDOW_SECONDS = 60.0
MAX_TRACKED = 10_000


class Anvil:
    """Counts sessions and recent connections per client address."""

    def __init__(self) -> None:
        self.sessions: dict[str, int] = {}
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self._clock = time.monotonic

    def admit(self, host: str, *, max_sessions: int, max_rate: int) -> str:
        """ "" if ``host`` may open a session now (it is counted), else why not."""
        if self.sessions.get(host, 0) >= max_sessions:
            return "sessions"
        now = self._clock()
        recent = self._recent.pop(host, None) or deque()
        while recent and now - recent[0] > WINDOW_SECONDS:
            recent.popleft()
        self._recent[host] = recent  # most recently seen last
        if len(recent) >= max_rate:
            return "rate"
        recent.append(now)
        while len(self._recent) > MAX_TRACKED:
            self._recent.popitem(last=False)
        self.sessions[host] = self.sessions.get(host, 0) + 1
        return ""

    def ended(self, host: str) -> None:
        """A session of ``host`` ended."""
        left = self.sessions.get(host, 0) - 1
        if left > 0:
            self.sessions[host] = left
        else:
            self.sessions.pop(host, None)


class AuthThrottle:
    """Failed logins per client address and per user, over ``WINDOW_SECONDS`` x 10.

    An address with ``per_ip`` recent failures is refused without a password
    check. A user with ``per_user`` recent failures is refused only from
    addresses that have failed before: a password-guessing run against one
    user stops, while the real user logging in from a clean address is still
    checked (no lockout from elsewhere). Refusals cost no PBKDF2 work.
    """

    window = WINDOW_SECONDS * 10

    def __init__(self) -> None:
        self._by_ip: OrderedDict[str, deque[float]] = OrderedDict()
        self._by_user: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, table: OrderedDict[str, deque[float]], key: str) -> int:
        now = time.monotonic()
        found = table.get(key)
        if found is None:
            return 0
        while found and now - found[0] > self.window:
            found.popleft()
        if not found:
            del table[key]
            return 0
        return len(found)

    def allowed(self, host: str, user: str, *, per_ip: int, per_user: int) -> bool:
        """Whether a login attempt from ``host`` for ``user`` may be checked now."""
        ip_failures = self._recent(self._by_ip, host)
        if ip_failures >= per_ip:
            return False
        return not (ip_failures and self._recent(self._by_user, user) >= per_user)

    def failed(self, host: str, user: str) -> None:
        now = time.monotonic()
        for table, key in ((self._by_ip, host), (self._by_user, user)):
            table.setdefault(key, deque()).append(now)
            table.move_to_end(key)
            while len(table) > MAX_TRACKED:
                table.popitem(last=False)
