"""``GET /readyz``: may this daemon be sent mail right now?

Ready means all of: the database runs a write transaction within
``PROBE_SECONDS`` (on SQLite through the same writer queue mail takes, so a
database locked by another process counts as unreachable); the daemon's
listeners serve and no component failed to start (``Host.problems``); and
none of the daemon's IMAP mailboxes has been failing for longer than
``[alerts] alert_after_seconds`` (the same threshold that sends a notice).
The relay and the forwarding self-tests are alerted on, but say nothing
about whether this daemon can take mail, so they leave it ready.
Probes share one database check at a time, in a thread of their own, so a
hanging database never piles up threads or blocks the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from emaild.errors import TransientError
from emaild.observe.figures import FiguresCache
from emaild.store.database import Database

# How long one database answer is reused for.
REUSE_SECONDS = 1.0
PROBE_SECONDS = 3.0
# Channels that bring mail in and retry on their own (their health clears itself).
INTAKE_KINDS = ("imap",)


def _probe(db: Database) -> None:
    def work(session: Session) -> None:
        session.execute(text("SELECT 1"))

    db.run(work)


class Readiness:
    """Answers ``problems()``; an empty list means ready."""

    def __init__(
        self,
        db: Database,
        cache: FiguresCache,
        *,
        alert_after: Callable[[], float],
        host_problems: Callable[[], list[str]] | None = None,
        channel_names: Callable[[], set[str]] | None = None,
    ) -> None:
        self.db = db
        self.cache = cache
        self.alert_after = alert_after
        self.host_problems = host_problems
        self.channel_names = channel_names
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emaild-ready")
        self._probe: asyncio.Future[Any] | None = None
        self._last: tuple[float, str] | None = None

    async def problems(self) -> list[str]:
        out = list(self.host_problems() if self.host_problems is not None else [])
        database = await self._database()
        if database:
            return [*out, database]
        loop = asyncio.get_running_loop()
        try:
            figures = await loop.run_in_executor(self._executor, self.cache.get)
        except TransientError as exc:
            return [*out, f"database: {exc}"]
        wanted = self.channel_names() if self.channel_names is not None else None
        limit = self.alert_after()
        for channel in figures.channels:
            if channel.kind not in INTAKE_KINDS:
                continue
            if wanted is not None and channel.name not in wanted:
                continue
            failing = channel.failing_for(figures.taken_at)
            if failing and failing >= limit:
                out.append(
                    f"channel {channel.name} failing for {int(failing)}s "
                    f"({channel.consecutive_failures} failures in a row)"
                )
        return out

    async def _database(self) -> str:
        """Empty when the database took a write transaction in time, else why not.

        One answer serves every request for ``REUSE_SECONDS``: a flood of
        unauthenticated ``/readyz`` requests is not a flood of write transactions.
        """
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < REUSE_SECONDS:
            return self._last[1]
        answer = await self._database_now()
        self._last = (time.monotonic(), answer)
        return answer

    async def _database_now(self) -> str:
        loop = asyncio.get_running_loop()
        if self._probe is not None and self._probe.done() and not self._probe.cancelled():
            self._probe.exception()  # seen (by the call that awaited it, or now)
        if self._probe is None or self._probe.done():
            call = functools.partial(_probe, self.db)
            self._probe = loop.run_in_executor(self._executor, call)
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), PROBE_SECONDS)
        except TimeoutError:
            return f"database: no answer within {PROBE_SECONDS:g}s"
        except TransientError as exc:
            return f"database: {exc}"
        except Exception as exc:
            return f"database: {type(exc).__name__}: {exc}"
        return ""

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
