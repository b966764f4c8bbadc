"""The daemon's alert job: every ``[alerts] check_interval_seconds``, check the channels."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from emaild.alerts.evaluate import Change, Notices, check_channels
from emaild.component import Host, JobComponent

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


class AlertsComponent(JobComponent):
    """Runs ``run_check`` on the daemon's scheduler for the daemon's own channels."""

    name = "alerts"
    job_id = JOB_ID
    failed_event = "alerts.check_failed"

    def trigger(self) -> dict[str, Any]:
        return {
            "trigger": "interval",
            "seconds": self.app.config.alerts.check_interval_seconds,
            "next_run_time": datetime.now(UTC),
        }

    async def work(self, host: Host) -> None:
        await host.run_sync(run_check, self.app, host.channel_names())


def alerts_component(app: App) -> AlertsComponent:
    """``emaild run`` factory: channel health is always watched (events even without admin)."""
    return AlertsComponent(app)
