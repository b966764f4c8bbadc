"""The daemon's alert job: every ``[alerts] check_interval_seconds``, check the channels."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from emaild.alerts.evaluate import Change, Notices, check_channels
from emaild.component import Host
from emaild.errors import EmaildError

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.alerts")

JOB_ID = "alerts"


def run_check(app: App, names: set[str]) -> list[Change]:
    """One check of the channels ``names`` (blocking), committed whole."""
    config = app.config
    sender = app.pipeline.addresses.default().address
    notices = Notices(
        admin=config.alerts.admin_address,
        sender=sender,
        domain=config.threading.domain or sender.rpartition("@")[2],
    )
    now = app.pipeline.clock()
    return app.db.run(
        lambda session: check_channels(
            session,
            names=names,
            alert_after=config.alerts.alert_after_seconds,
            now=now,
            notices=notices,
        )
    )


class AlertsComponent:
    """Runs ``run_check`` on the daemon's scheduler for the daemon's own channels."""

    name = "alerts"

    def __init__(self, app: App) -> None:
        self.app = app
        self.host: Host | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, host: Host) -> None:
        self.host = host
        host.scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self.app.config.alerts.check_interval_seconds,
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )

    async def run_once(self) -> None:
        """One check in the worker pool; errors are logged, never raised."""
        assert self.host is not None
        self._idle.clear()
        try:
            await self.host.run_sync(run_check, self.app, self.host.channel_names())
        except EmaildError as exc:  # the database is down: the next run tries again
            log.warning("alerts.check_failed", error=str(exc))
        except Exception as exc:
            log.error("alerts.check_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        finally:
            self._idle.set()

    async def stop(self) -> None:
        """Remove the job and let a check in progress finish (the daemon bounds the wait)."""
        if self.host is not None:
            scheduler: Any = self.host.scheduler
            if scheduler.get_job(JOB_ID) is not None:
                scheduler.remove_job(JOB_ID)
        await self._idle.wait()


def alerts_component(app: App) -> AlertsComponent:
    """``emaild run`` factory: channel health is always watched (events even without admin)."""
    return AlertsComponent(app)
