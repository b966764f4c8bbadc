"""A DNS server for the tests, on loopback (dnslib): SPF, DKIM and DMARC records on demand.

``zone`` maps a name to its TXT records (A records too, for SPF ``a``); a name
in ``silent`` is never answered, which is how a test makes a DNS timeout.
"""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSError, DNSLogger, DNSServer


@dataclass
class Zone:
    txt: dict[str, list[str]] = field(default_factory=dict)
    a: dict[str, list[str]] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    queries: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: Zone) -> None:
        self.zone = zone

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.zone.lock:
            self.zone.queries.append(f"{name} {qtype}")
        if any(name == s or name.endswith("." + s) for s in self.zone.silent):
            raise DNSError("dropped: the test wants a timeout")
        reply = request.reply()
        if qtype == "TXT":
            for text in self.zone.txt.get(name, []):
                # Long records (DKIM keys) go out as several 255-byte strings.
                chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunks), ttl=300))
        elif qtype == "A":
            for ip in self.zone.a.get(name, []):
                reply.add_answer(RR(name, QTYPE.A, rdata=A(ip), ttl=300))
        known = name in self.zone.txt or name in self.zone.a
        if not reply.rr and not known:
            reply.header.rcode = 3  # NXDOMAIN
        return reply


@contextmanager
def dns_server(zone: Zone) -> Iterator[str]:
    """Serve ``zone`` on 127.0.0.1 (UDP, a free port); yields "127.0.0.1:PORT"."""
    quiet = DNSLogger(logf=lambda _: None)
    server = DNSServer(_Resolver(zone), address="127.0.0.1", port=0, logger=quiet)
    server.start_thread()
    try:
        yield f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()
        server.server.server_close()


def dkim_key() -> tuple[bytes, str]:
    """A fresh RSA key: (private key PEM for dkimpy, the ``p=`` of its DNS record)."""
    pem = subprocess.run(
        ["openssl", "genrsa", "-traditional", "1024"], capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "rsa", "-pubout", "-outform", "DER"],
        input=pem,
        capture_output=True,
        check=True,
    ).stdout
    return pem, base64.b64encode(der).decode()
