"""The ``[retention]`` table: how long kept mail stays (all off by default).

Part of the configuration model (``emaild.config_model``); import it from
``emaild.config`` like every other table. ``emaild.privacy.retention`` applies it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from emaild.config_base import Section

# A rule is a whole number of days; 0 means "keep for ever" (the default).
Days = Annotated[int, Field(ge=0, le=36500)]


class RetentionConfig(Section):
    """What the daily purge removes (``[retention]``); 0 keeps it for ever."""

    # Raw bytes and attachments of the messages of cases closed more than this many
    # days ago (the case, its history and the messages' text stay).
    closed_case_raw_days: Days = 0
    # Quarantine entries (and their raw bytes) older than this.
    quarantine_days: Days = 0
    # Messages a rule or accept-from dropped (rows and raw bytes) older than this.
    dropped_days: Days = 0
    # Webhook deliveries delivered or given up more than this many days ago, with
    # their attempts and the event bodies no delivery needs any more. On by
    # default: unlike mail, they are only a log of what was sent.
    webhook_days: Days = 30
    # The daily job's hour (UTC), when the daemon runs with any rule on.
    run_hour: Annotated[int, Field(ge=0, le=23)] = 3

    @property
    def enabled(self) -> bool:
        return bool(
            self.closed_case_raw_days
            or self.quarantine_days
            or self.dropped_days
            or self.webhook_days
        )
