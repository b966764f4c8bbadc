"""The daemon's daily purge: the ``[retention]`` rules applied at ``run_hour`` UTC.

One APScheduler cron job (``max_instances=1``, ``coalesce``) runs ``purge`` in
the worker pool. The rules are read at each run, so a reload (SIGHUP) that
turns one on or off counts from the next run; a new ``run_hour`` needs a
restart. Failures are logged; the next day's run tries again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from emaild.component import Host, JobComponent
from emaild.privacy.retention import purge

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.retention")

JOB_ID = "retention-purge"


class RetentionComponent(JobComponent):
    """Runs the purge once a day."""

    name = "retention"
    job_id = JOB_ID
    failed_event = "retention.run_failed"

    def trigger(self) -> dict[str, Any]:
        return {"trigger": "cron", "hour": self.app.config.retention.run_hour, "minute": 0}

    async def work(self, host: Host) -> None:
        """One purge with the current rules (nothing when every rule is off)."""
        rules = self.app.config.retention
        if not rules.enabled:
            return
        report = await host.run_sync(
            purge, self.app.db, self.app.blobs, rules, self.app.pipeline.clock()
        )
        log.info("retention.purged", **report.as_json())


def retention_component(app: App) -> RetentionComponent:
    """``emaild run`` factory: always there; a run with every rule off does nothing."""
    return RetentionComponent(app)
