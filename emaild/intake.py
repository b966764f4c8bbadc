"""What a channel hands the pipeline (``Envelope``) and gets back (``IngestResult``).

These types belong to no stage: channels, the quarantine, the release of
held mail and the pipeline all speak them, so they live outside
``emaild.pipeline`` and any package may import them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Channels where the sender is still connected: a refusal is an SMTP 5xx there and
# the envelope sender is always known (empty = the null sender of a bounce). Any
# other channel has accepted the mail already: refusing it would be backscatter.
LIVE_CHANNELS = ("smtp", "lmtp")


@dataclass(frozen=True)
class Envelope:
    """Transport facts a channel knows about a message."""

    channel: str = "pipe"
    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()
    peer: str = ""
    helo: str = ""  # the SMTP client's HELO/EHLO name (SPF checks it)
    # The routing address chosen by the channel (``--to``, a mailbox's address).
    routing_hint: str = ""
    # An operator released this message from a policy quarantine (rule or
    # accept-from): those quarantines no longer apply; everything else does.
    release: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to),
            "peer": self.peer,
            "helo": self.helo,
            "routing_hint": self.routing_hint,
            "release": self.release,
        }


class Outcome(enum.Enum):
    """What became of a message. Every value but ``REJECTED`` means it is durably stored."""

    NEW_CASE = "new_case"
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    HELD = "held"
    DROPPED = "dropped"
    REJECTED = "rejected"


@dataclass(frozen=True)
class IngestResult:
    """The answer a channel maps to its protocol."""

    outcome: Outcome
    case_number: int | None = None
    message_row_id: int | None = None
    quarantine_id: int | None = None
    detail: str = ""
    trace: tuple[dict[str, Any], ...] = ()
    # Quarantined because the input is not a message at all (no header block):
    # kept, but a pipe answers 65 so the MTA tells the sender (README, exit codes).
    not_a_message: bool = False

    @property
    def stored(self) -> bool:
        return self.outcome is not Outcome.REJECTED


# ``Pipeline.ingest`` as the parts that re-run stored mail see it (release, retry).
Ingest = Callable[[bytes, Envelope], IngestResult]


@dataclass
class OutcomeTally:
    """How many messages ended in each outcome: the base of import and poll summaries."""

    cases: int = 0
    appended: int = 0
    duplicates: int = 0
    quarantined: int = 0
    held: int = 0
    dropped: int = 0
    rejected: int = 0

    def count(self, outcome: Outcome) -> None:
        """Count one outcome."""
        name = _TALLY_FIELD[outcome]
        setattr(self, name, getattr(self, name) + 1)


_TALLY_FIELD = {
    Outcome.NEW_CASE: "cases",
    Outcome.APPENDED: "appended",
    Outcome.DUPLICATE: "duplicates",
    Outcome.QUARANTINED: "quarantined",
    Outcome.HELD: "held",
    Outcome.DROPPED: "dropped",
    Outcome.REJECTED: "rejected",
}
