"""One signed POST: Standard Webhooks headers, bounded time, no redirects.

The body is compact JSON; ``webhook-id`` is the event's id (the same on every
retry and replay, so receivers deduplicate by it), ``webhook-timestamp`` the
time of this attempt, ``webhook-signature`` its HMAC-SHA256 by the
``standardwebhooks`` library. The whole attempt (DNS, connect, TLS, request,
response head, up to ``MAX_RESPONSE_BYTES`` of the body) must finish within
the timeout; a receiver that trickles bytes is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks import Webhook

from emaild.webhooks.targets import is_public

USER_AGENT = "emaild-webhooks/1"
# Enough of a failing receiver's answer to show the operator what it said.
MAX_RESPONSE_BYTES = 4096
# How long the (unused) answer to a 2xx is read, so its connection can be reused.
DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class Result:
    """How one attempt went: ``status`` None when no HTTP answer came."""

    status: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410


def encode(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=False)


def sign(secret: str, msg_id: str, at: datetime, payload: str) -> dict[str, str]:
    """The three Standard Webhooks headers for ``payload`` sent at ``at``."""
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=payload)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def make_client(
    timeout: float, *, verify: ssl.SSLContext | None = None, connections: int = 256
) -> httpx.AsyncClient:
    """A client: per-phase timeouts, no redirects, no proxies from the environment."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        verify=verify if verify is not None else True,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=min(connections, 64)
        ),
        headers={"user-agent": USER_AGENT},
    )


class Clients:
    """One-connection clients, lent one per POST and kept per origin for reuse.

    One ``httpx.AsyncClient`` with many connections scans its whole pool for
    every request and every state change (httpcore): with dozens of deliveries
    in flight that costs more CPU than the POSTs themselves, on the event loop
    the SMTP listener shares. A client holding one kept-alive connection to
    the origin it last served costs nothing of the kind. At most ``keep``
    idle clients are kept; they share one TLS context.
    """

    def __init__(self, timeout: float, keep: int = 64) -> None:
        self.timeout = timeout
        self.keep = keep
        self._tls = httpx.create_ssl_context()
        self._idle: dict[str, list[httpx.AsyncClient]] = {}
        self._count = 0

    @contextlib.asynccontextmanager
    async def lease(self, url: str) -> AsyncIterator[httpx.AsyncClient]:
        """A client for ``url`` (an idle one of its origin if any) while the block runs."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        idle = self._idle.get(origin)
        if idle:
            client = idle.pop()
            self._count -= 1
        else:
            client = make_client(self.timeout, verify=self._tls, connections=1)
        try:
            yield client
        finally:
            if self._count < self.keep:
                self._idle.setdefault(origin, []).append(client)
                self._count += 1
            else:
                await client.aclose()

    async def aclose(self) -> None:
        clients = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        self._count = 0
        for client in clients:
            await client.aclose()


async def public_target_problem(url: str) -> str:
    """Why ``url``'s host is not public right now ("" if it is): checked before each
    POST of a run-time subscription (the address may have changed since it was added)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the URL's port is not a port number"
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not is_public(address):
            return f"{host} resolves to {address}: private targets need webhooks.allow_private"
    return ""


async def post(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    msg_id: str,
    body: dict[str, Any],
    timeout: float,
) -> Result:
    """POST ``body`` signed to ``url``; never raises for network trouble."""
    payload = encode(body)
    headers = {"content-type": "application/json", **sign(secret, msg_id, _now(), payload)}
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            status, text = await _send(client, url, payload.encode(), headers)
    except TimeoutError:
        return Result(None, f"timed out after {timeout:g}s", _ms(started))
    except httpx.HTTPError as exc:
        return Result(None, _describe(exc), _ms(started))
    error = ""
    if not 200 <= status < 300:
        error = f"HTTP {status}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            error += " (redirects are not followed)"
    return Result(status, error, _ms(started))


async def _send(
    client: httpx.AsyncClient, url: str, payload: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    async with client.stream("POST", url, content=payload, headers=headers) as response:
        if 200 <= response.status_code < 300:
            # Delivered. Still read the (usually empty) answer to its end, briefly:
            # a response read whole leaves its connection in the pool for the next
            # POST, one left unread is closed, and every delivery would pay a new
            # connection on both sides. A receiver that dawdles here is cut off.
            with contextlib.suppress(TimeoutError, httpx.HTTPError):
                async with asyncio.timeout(DRAIN_SECONDS):
                    await _head(response)
            return response.status_code, ""
        head = await _head(response)
        text = " ".join(head[:300].decode("utf-8", "replace").split())
        return response.status_code, text


async def _head(response: httpx.Response) -> bytes:
    """Up to ``MAX_RESPONSE_BYTES`` of the answer (all of it if shorter)."""
    head = bytearray()
    async for chunk in response.aiter_raw():
        head += chunk
        if len(head) >= MAX_RESPONSE_BYTES:
            break  # a long answer: its connection is closed, not reused
    return bytes(head)


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def _now() -> datetime:
    return datetime.now(UTC)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
