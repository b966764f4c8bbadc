"""What flows through the pipeline: the envelope in, the context, the outcome out."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from emaild.config import Config, RoutingAddress

if TYPE_CHECKING:
    from emaild.classify import Classification
    from emaild.mime.parse import ParsedMessage
    from emaild.pipeline.core import Pipeline
    from emaild.store.models import Case, Message


@dataclass(frozen=True)
class Envelope:
    """Transport facts a channel knows about a message."""

    channel: str = "pipe"
    mail_from: str = ""
    rcpt_to: tuple[str, ...] = ()
    peer: str = ""
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
            "routing_hint": self.routing_hint,
            "release": self.release,
        }


class Outcome(enum.Enum):
    """What became of a message. Every value means it is durably stored."""

    NEW_CASE = "new_case"
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    HELD = "held"
    DROPPED = "dropped"
    REJECTED = "rejected"


@dataclass
class CaseFields:
    """Case fields decided by routing defaults, then rules."""

    priority: str = "Medium"
    origin: str = "Email"
    owner: str = ""
    category: str = ""
    tags: list[str] = field(default_factory=list)
    auto_response: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "priority": self.priority,
            "origin": self.origin,
            "owner": self.owner,
            "category": self.category,
            "tags": list(self.tags),
            "auto_response": self.auto_response,
        }


@dataclass
class Decision:
    stage: str
    decision: str
    evidence: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "decision": self.decision, **self.evidence}


@dataclass
class IngestContext:
    """The state one message carries from stage to stage."""

    raw: bytes
    raw_sha256: str
    envelope: Envelope
    config: Config
    pipeline: Pipeline
    now: datetime
    session: Session | None = None
    parsed: ParsedMessage | None = None
    classification: Classification | None = None
    routing: RoutingAddress | None = None
    fields: CaseFields = field(default_factory=CaseFields)
    # Set by correlation: the existing case this message belongs to, if any.
    case: Case | None = None
    linked_case_id: int | None = None
    mentioned_number: int | None = None
    # Set by rules / routing: a terminal disposition other than a case.
    disposition: Outcome | None = None
    disposition_reason: str = ""
    # Set by rules: what to do INSTEAD of opening a new case (bounces, auto-replies
    # on their own); a message that threads onto an existing case is appended.
    new_case_disposition: Outcome | None = None
    new_case_reason: str = ""
    message: Message | None = None
    outcome: Outcome | None = None
    trace: list[Decision] = field(default_factory=list)
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # Run in the message's transaction after the last stage (ctx.message exists),
    # and after a successful commit (errors there are logged, never raised).
    before_commit: list[Callable[[IngestContext], None]] = field(default_factory=list)
    after_commit: list[Callable[[IngestContext], None]] = field(default_factory=list)

    def decide(self, stage: str, decision: str, **evidence: Any) -> None:
        """Record a decision on the message's trace (and so in the database)."""
        self.trace.append(Decision(stage, decision, evidence))

    def stop(self, outcome: Outcome) -> None:
        """End the pipeline here with ``outcome``."""
        self.outcome = outcome
        self.stopped = True

    def trace_json(self) -> list[dict[str, Any]]:
        return [d.as_json() for d in self.trace]


@dataclass(frozen=True)
class IngestResult:
    """The answer a channel maps to its protocol."""

    outcome: Outcome
    case_number: int | None = None
    message_row_id: int | None = None
    quarantine_id: int | None = None
    detail: str = ""
    trace: tuple[dict[str, Any], ...] = ()

    @property
    def stored(self) -> bool:
        return self.outcome is not Outcome.REJECTED


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
