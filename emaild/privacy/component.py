"""The daemon's daily purge: the ``[retention]`` rules applied at ``run_hour`` UTC.

One APScheduler cron job (``max_instances=1``, ``coalesce``) runs ``purge`` in
the worker pool. The rules are read at each run, so a reload (SIGHUP) that
turns one on or off counts from the next run; a new ``run_hour`` needs a
restart. Failures are logged; the next day's run tries again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from emaild.component import Host
from emaild.errors import EmaildError
from emaild.privacy.retention import purge

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.retention")

JOB_ID = "retention-purge"


class RetentionComponent:
    """Runs the purge once a day."""

    name = "retention"

    def __init__(self, app: App) -> None:
        self.app = app
        self.host: Host | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, host: Host) -> None:
        self.host = host
        host.scheduler.add_job(
            self.run_once,
            "cron",
            hour=self.app.config.retention.run_hour,
            minute=0,
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
        )

    async def run_once(self) -> None:
        """One purge with the current rules; errors are logged, never raised."""
        assert self.host is not None
        rules = self.app.config.retention
        if not rules.enabled:
            return
        self._idle.clear()
        try:
            report = await self.host.run_sync(
                purge, self.app.db, self.app.blobs, rules, self.app.pipeline.clock()
            )
            log.info("retention.purged", **report.as_json())
        except EmaildError as exc:
            log.warning("retention.run_failed", error=str(exc))
        except Exception as exc:
            log.error("retention.run_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        finally:
            self._idle.set()

    async def stop(self) -> None:
        if self.host is not None:
            scheduler: Any = self.host.scheduler
            if scheduler.get_job(JOB_ID) is not None:
                scheduler.remove_job(JOB_ID)
        await self._idle.wait()


def retention_component(app: App) -> RetentionComponent:
    """``emaild run`` factory: always there; a run with every rule off does nothing."""
    return RetentionComponent(app)
