"""What flows through the pipeline: the context one message carries from stage to stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from emaild import quarantine
from emaild.config import Config, RoutingAddress
from emaild.intake import Envelope, IngestResult, Outcome, OutcomeTally
from emaild.rules.fields import CaseFields
from emaild.services import Services

if TYPE_CHECKING:
    from emaild.classify import Classification
    from emaild.mime.forwarded import Original
    from emaild.mime.parse import ParsedMessage
    from emaild.store.models import Case, Message
    from emaild.trust import AuthVerdict

__all__ = [
    "CaseFields",
    "Decision",
    "Envelope",
    "IngestContext",
    "IngestResult",
    "Outcome",
    "OutcomeTally",
    "StoredRow",
]

# ``(id, state)`` of the message row stored under a dedup key.
StoredRow = tuple[int, str]


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
    services: Services
    now: datetime
    # A dry run (``emaild rules test``) writes nothing, not even attachment blobs.
    dry_run: bool = False
    # Runs in the message's transaction, whatever the outcome (the IMAP cursor).
    also: Callable[[Session], None] | None = None
    session: Session | None = None
    parsed: ParsedMessage | None = None
    classification: Classification | None = None
    routing: RoutingAddress | None = None
    auth: AuthVerdict | None = None  # set by authenticate: who the sender proved to be
    # Set by authenticate for the rules: auth.* and spam.* facts, by field name.
    verdicts: dict[str, str] = field(default_factory=dict)
    # Set by unwrap: an internal sender forwarded this customer's message.
    forwarded: Original | None = None
    forwarder: str = ""
    fields: CaseFields = field(default_factory=CaseFields)
    # Set by route: who chose which default fields (a web form over its address).
    fields_from: dict[str, str] = field(default_factory=dict)
    # Set by correlation: the existing case this message belongs to, if any.
    case: Case | None = None
    linked_case_id: int | None = None
    # A stranger's message appended to ``case`` (stranger_reply = "append_flagged").
    flagged: bool = False
    mentioned_number: int | None = None
    new_text: str | None = None  # the message's text without quoted history
    display_subject: str = ""  # the subject without our case tags
    # Set by rules / routing: a terminal disposition other than a case, and by whom.
    disposition: Outcome | None = None
    disposition_reason: str = ""
    disposition_stage: str = ""
    # Set by rules: what to do INSTEAD of opening a new case (bounces, auto-replies
    # on their own); a message that threads onto an existing case is appended.
    new_case_disposition: Outcome | None = None
    new_case_reason: str = ""
    # Set by verify for deduplicate: the row under the message's dedup key.
    stored_row: StoredRow | None = None
    stored_row_known: bool = False
    fingerprint: str = ""  # set by loopdetect: sender, subject and body
    loop: str = ""  # set by loopdetect: why this message is part of a loop
    duplicate: bool = False
    quarantine_id: int | None = None
    message: Message | None = None
    outcome: Outcome | None = None
    trace: list[Decision] = field(default_factory=list)
    stopped: bool = False
    # Run in the message's transaction after the last stage (ctx.message exists).
    before_commit: list[Callable[[IngestContext], None]] = field(default_factory=list)
    # Addresses verified by this message: their held mail is released once it is
    # committed, by the pipeline's owner (never from inside a stage).
    verified_addresses: list[str] = field(default_factory=list)

    @property
    def config(self) -> Config:
        return self.services.config

    def decide(self, stage: str, decision: str, **evidence: Any) -> None:
        """Record a decision on the message's trace (and so in the database)."""
        self.trace.append(Decision(stage, decision, evidence))

    def stop(self, outcome: Outcome) -> None:
        """End the pipeline here with ``outcome``."""
        self.outcome = outcome
        self.stopped = True

    def held(self, *, stage: str, error: str, reason: str) -> quarantine.Held:
        """What the quarantine keeps of this message."""
        return quarantine.Held(
            channel=self.envelope.channel,
            reason=reason,
            stage=stage,
            error=error,
            raw_sha256=self.raw_sha256,
            raw_size=len(self.raw),
            headers=quarantine.header_block(self.raw),
            envelope_from=self.envelope.mail_from,
            envelope_to=self.envelope.rcpt_to,
        )

    def trace_json(self) -> list[dict[str, Any]]:
        return [d.as_json() for d in self.trace]
