"""What an SMTP session knows about its client, for the sender checks (light: no DNS)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Connection:
    """What the SMTP session knew: the client's IP, its HELO name and MAIL FROM."""

    ip: str
    helo: str
    mail_from: str


def peer_ip(peer: str) -> str:
    """The IP of an SMTP peer label ``host:port`` / ``[v6]:port`` ("" if none)."""
    host = peer[1:].partition("]")[0] if peer.startswith("[") else peer.rpartition(":")[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""
