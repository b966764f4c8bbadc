"""Peer addresses: how many workers each holds, and who waits for one (issue 18 §2).

Runs on the event loop only: ``acquire`` waits while the peer holds its
share; ``release`` (called on the loop when a worker finishes) wakes the
peer's next waiter. A waiter whose caller gave up (timeout) is skipped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class PeerShares:
    """Per-peer counts of messages in the worker pool, bounded by a share."""

    def __init__(self) -> None:
        self.busy: dict[str, int] = {}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    async def acquire(self, peer: str, share: int) -> None:
        """Wait until ``peer`` holds fewer than ``share`` workers, then take one."""
        while self.busy.get(peer, 0) >= share:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(peer, deque()).append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(peer)  # woken as the caller gave up: pass the turn on
                raise
            finally:
                queue = self._waiters.get(peer)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                if queue is not None and not queue:
                    del self._waiters[peer]
        self.busy[peer] = self.busy.get(peer, 0) + 1

    def release(self, peer: str) -> None:
        """One of ``peer``'s messages left the pool: wake its next live waiter."""
        left = self.busy.get(peer, 0) - 1
        if left > 0:
            self.busy[peer] = left
        else:
            self.busy.pop(peer, None)
        self._wake(peer)

    def _wake(self, peer: str) -> None:
        queue = self._waiters.get(peer)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break


def peer_host(address: Any) -> str:
    """The host part of a socket address (the client's IP address)."""
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)


def peer_label(address: Any) -> str:
    """``host:port`` (``[v6]:port``) of a socket address, for logs and health."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)
