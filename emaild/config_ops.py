"""The ``[metrics]``, ``[alerts]`` and ``[[forwarding_test]]`` tables: operating emaild.

Part of the configuration model (``emaild.config_model``); import them from
``emaild.config`` like every other table. README: Metrics, health and alerts.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import Field, field_validator

from emaild.config_base import Section


class MetricsConfig(Section):
    """``GET /metrics`` (Prometheus text) and what it may cost."""

    # Off: nothing is counted and /metrics answers 404 (/healthz and /readyz stay).
    enabled: bool = True
    # "HOST:PORT" of a listener of its own for /metrics, /healthz and /readyz;
    # empty = they are served on the HTTP API's listener (http.listen).
    listen: str = ""
    # Networks that may scrape /metrics without a token; from anywhere else a
    # Bearer token (any scope) is needed. The default: this host only.
    allow_from: list[str] = ["127.0.0.0/8", "::1/128"]
    # Figures read from the database (outbox, quarantine, held mail, blob bytes,
    # channel status) are computed at most this often, whatever the scrape rate.
    cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 15.0

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"not a network (like 10.0.0.0/8 or ::1/128): {item!r}") from None
        return [str(ipaddress.ip_network(v.strip(), strict=False)) for v in value]


class AlertsConfig(Section):
    """Notices about failing channels (``emaild.alerts``)."""

    # Who gets the notice mail (through the outbox and the relay); empty = events
    # and logs only.
    admin_address: str = ""
    # A channel failing this long (IMAP login refused, server or relay
    # unreachable, a forwarding self-test failing) is alerted on; an IMAP
    # mailbox failing this long also makes /readyz answer 503.
    alert_after_seconds: Annotated[float, Field(ge=0)] = 600.0
    # How often channel health is looked at.
    check_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @field_validator("admin_address")
    @classmethod
    def _admin(cls, value: str) -> str:
        value = value.strip()
        if value and (value.count("@") != 1 or any(c.isspace() for c in value)):
            raise ValueError(f"not an email address: {value!r}")
        return value.lower()


class ForwardingTestConfig(Section):
    """A scheduled ``emaild address test-forwarding`` round trip (``[[forwarding_test]]``)."""

    address: str
    interval_minutes: Annotated[float, Field(gt=0)] = 60.0
    # How long the marked message may take to come back before the test fails.
    timeout_seconds: Annotated[float, Field(ge=1, le=3600)] = 300.0

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip().lower()
        if value.count("@") != 1 or any(c.isspace() for c in value):
            raise ValueError(f"not an email address: {value!r}")
        return value
