"""The daemon's outbox component: deliver due items every ``relay.flush_interval_seconds``.

One APScheduler interval job (``max_instances=1``, ``coalesce``) runs
``deliver_due`` in the daemon's worker pool, so a slow relay never blocks the
event loop and two runs never overlap in one process (other processes are
kept apart by the claim in ``emaild.outbox.queue``). On shutdown the job is
removed and a run in progress is allowed to finish its current item.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from emaild.channels.health import RELAY_CHANNEL, ChannelHealth
from emaild.component import Host
from emaild.errors import EmaildError
from emaild.outbox.delivery import deliver_due

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.outbox")

JOB_ID = "outbox-delivery"


class OutboxComponent:
    """Runs outbox delivery on the daemon's scheduler."""

    name = "outbox"

    def __init__(self, app: App) -> None:
        self.app = app
        self.host: Host | None = None
        self.health = ChannelHealth(RELAY_CHANNEL, "relay")
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, host: Host) -> None:
        """Add the delivery job; the first run is immediate (items left from before a restart)."""
        self.host = host
        host.scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self.app.config.relay.flush_interval_seconds,
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )

    async def run_once(self) -> None:
        """One delivery run in the worker pool; errors are logged, never raised."""
        assert self.host is not None
        self._idle.clear()
        try:
            await self.host.run_sync(deliver_due, self.app, health=self.health)
            await self.host.run_sync(self.health.flush, self.app.db)
        except EmaildError as exc:  # the database is down: the next run tries again
            log.warning("outbox.run_failed", error=str(exc))
        except Exception as exc:
            log.error("outbox.run_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        finally:
            self._idle.set()

    async def stop(self) -> None:
        """Remove the job and wait for a run in progress (the daemon bounds the wait)."""
        if self.host is not None:
            scheduler: Any = self.host.scheduler
            if scheduler.get_job(JOB_ID) is not None:
                scheduler.remove_job(JOB_ID)
        await self._idle.wait()


def outbox_component(app: App) -> OutboxComponent:
    """``COMPONENTS`` factory: the outbox always runs (queued mail must go out)."""
    return OutboxComponent(app)
