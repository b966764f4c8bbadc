"""The daemon's outbox component: deliver due items every ``relay.flush_interval_seconds``.

One APScheduler interval job (``max_instances=1``, ``coalesce``) runs
``deliver_due`` in the daemon's worker pool, so a slow relay never blocks the
event loop and two runs never overlap in one process (other processes are
kept apart by the claim in ``emaild.outbox.queue``). On shutdown the job is
removed and a run in progress is allowed to finish its current item.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from emaild.channels.health import RELAY_CHANNEL, ChannelHealth
from emaild.component import Host, JobComponent
from emaild.outbox.delivery import deliver_due

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.outbox")

JOB_ID = "outbox-delivery"


class OutboxComponent(JobComponent):
    """Runs outbox delivery on the daemon's scheduler."""

    name = "outbox"
    job_id = JOB_ID
    failed_event = "outbox.run_failed"
    # Every process delivers: each item is claimed on its own (emaild.outbox.queue).
    singleton = False

    def __init__(self, app: App) -> None:
        super().__init__(app)
        self.health = ChannelHealth(RELAY_CHANNEL, "relay")

    def trigger(self) -> dict[str, Any]:
        """The first run is immediate (items left from before a restart)."""
        return {
            "trigger": "interval",
            "seconds": self.app.config.relay.flush_interval_seconds,
            "next_run_time": datetime.now(UTC),
        }

    async def work(self, host: Host) -> None:
        await host.run_sync(deliver_due, self.app, health=self.health)
        await host.run_sync(self.health.flush, self.app.db)


def outbox_component(app: App) -> OutboxComponent:
    """``COMPONENTS`` factory: the outbox always runs (queued mail must go out)."""
    return OutboxComponent(app)
