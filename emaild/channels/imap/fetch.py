"""Downloading a batch of messages, and the next batch while this one is stored.

``fetch`` gets a batch: ``BODY.PEEK[]`` (nothing is marked seen by reading)
for messages up to the size limit, only the header block above it.
``Prefetch`` runs ``fetch`` for the following batch on a thread while the
poller stores the current one, so the download and the pipeline overlap
instead of taking turns. The connection is never used by two threads at
once: the poller touches it again (after-store actions) only once
``Prefetch.result`` has returned. A catch-up thus holds up to two batches.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from imapclient import IMAPClient


@dataclass
class Fetched:
    uid: int
    size: int
    raw: bytes | None = None  # None: over the size limit, only ``headers`` fetched
    headers: bytes = b""


def fetch(client: IMAPClient, batch: list[tuple[int, int]], limit: int) -> list[Fetched]:
    """The messages of ``batch``: whole up to ``limit`` bytes, only headers above."""
    whole = [uid for uid, size in batch if size <= limit]
    big = [uid for uid, size in batch if size > limit]
    bodies = client.fetch(whole, ["BODY.PEEK[]"]) if whole else {}
    heads = client.fetch(big, ["BODY.PEEK[HEADER]"]) if big else {}
    out = []
    for uid, size in batch:
        if uid in bodies and b"BODY[]" in bodies[uid]:
            out.append(Fetched(uid, size, raw=bytes(bodies[uid][b"BODY[]"])))
        elif uid in heads and b"BODY[HEADER]" in heads[uid]:
            out.append(Fetched(uid, size, headers=bytes(heads[uid][b"BODY[HEADER]"])))
        # Otherwise it was expunged meanwhile: nothing to store.
    return out


class Prefetch:
    """``fetch(client, batch, limit)`` running on its own thread."""

    def __init__(self, client: IMAPClient, batch: list[tuple[int, int]], limit: int) -> None:
        self._value: list[Fetched] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(client, batch, limit), name="imap-prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, client: IMAPClient, batch: list[tuple[int, int]], limit: int) -> None:
        try:
            self._value = fetch(client, batch, limit)
        except BaseException as exc:
            self._error = exc

    def result(self) -> list[Fetched]:
        """Wait for the batch; raises what fetching it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value

    def settle(self) -> None:
        """Wait for the download to end, whatever came of it (the connection is free)."""
        self._thread.join()
