"""Session timeouts that are short when nothing is at stake and shrink under load.

aiosmtpd arms one timer at the greeting and after every command, for
``_timeout_duration`` seconds; the whole DATA transfer runs under the timer
armed by the DATA command, which makes ``smtp.timeout_seconds`` a bound on
the transfer and so a minimum data rate (35 MiB in 300 s is 120 KiB/s).
Reading that duration here, at each arming (issue 18 §3, after Postfix's
stress-adaptive timeouts):

- outside a transaction (before MAIL FROM): ``smtp.idle_timeout_seconds``;
- inside one: ``smtp.timeout_seconds``;
- under stress (at least ``STRESS_SHARE`` of ``smtp.max_connections`` open):
  ``smtp.stress_timeout_seconds`` for both, so idle and trickling sessions
  give their slots back quickly while the listener is full.
"""

from __future__ import annotations

from typing import Any

STRESS_SHARE = 0.75


class AdaptiveTimeout:
    """Provides aiosmtpd's ``_timeout_duration`` from the current load."""

    _base_timeout: float = 300.0

    @property
    def _timeout_duration(self) -> float:
        this: Any = self
        channel = this.listener.channel
        smtp = channel.limits()
        stressed = len(channel.sessions) >= STRESS_SHARE * smtp.max_connections
        wanted = smtp.timeout_seconds if this.in_transaction() else smtp.idle_timeout_seconds
        if stressed:
            wanted = min(wanted, smtp.stress_timeout_seconds)
        return float(wanted)

    @_timeout_duration.setter
    def _timeout_duration(self, value: float) -> None:
        # aiosmtpd's __init__ stores its ``timeout`` argument here; the
        # configuration is read afresh instead, so SIGHUP changes apply.
        self._base_timeout = value
