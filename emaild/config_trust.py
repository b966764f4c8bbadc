"""The ``[trust]`` and ``[spam]`` tables: whose verdicts on a sender emaild believes.

Part of the configuration model (``emaild.config_model``); import them from
``emaild.config`` like every other table.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import Field, field_validator

from emaild.config_base import Section


class TrustConfig(Section):
    """Whose ``Authentication-Results`` headers emaild believes (``[trust]``)."""

    # authserv-ids of the MTAs that check mail before emaild sees it; a copy
    # from any other id may have been written by the sender and is ignored.
    authserv_ids: list[str] = []
    # SPF, DKIM and DMARC checked by emaild itself for mail on the SMTP listener
    # (when it faces the internet, with no MTA in front to check).
    own_checks: bool = False
    # DNS servers for those checks, "IP" or "IP:PORT"; empty = the system's.
    dns_servers: list[str] = []
    dns_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = 2.0
    dns_cache_entries: Annotated[int, Field(ge=0, le=1_000_000)] = 10_000
    dns_cache_max_ttl_seconds: Annotated[float, Field(ge=0)] = 3600.0
    # Cc'd (and To) addresses of one message recorded as case participants, at most.
    max_cc_participants: Annotated[int, Field(ge=0, le=1000)] = 20

    @field_validator("dns_servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for item in value:
            host = item[1:].partition("]")[0] if item.startswith("[") else item
            if not item.startswith("[") and item.count(":") == 1:
                host, _, port = item.partition(":")
                if not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(f"bad port in {item!r}")
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"not an IP address or IP:PORT: {item!r}") from None
        return value

    @field_validator("authserv_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            item = item.strip().lower()
            if not item or any(c.isspace() or c == ";" for c in item):
                raise ValueError(f"not an authserv-id: {item!r}")
            out.append(item)
        return out


class SpamConfig(Section):
    """A spam scan through rspamd (``[spam]``); see emaild/trust/rspamd.py."""

    # rspamd's normal worker, e.g. "http://127.0.0.1:11333"; empty = no scan.
    rspamd_url: str = ""
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 5.0

    @field_validator("rspamd_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value
