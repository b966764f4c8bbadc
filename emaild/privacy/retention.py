"""The ``[retention]`` rules: what the daily purge and ``emaild purge`` remove.

Three rules, each off (0 days) unless configured:

- ``closed_case_raw_days``: cases closed more than N days ago lose the raw bytes
  and attachment bytes of their messages; the case, its history, the messages'
  text and the attachments' names stay (``raw_sha256``/``sha256`` become "").
- ``quarantine_days``: quarantine entries older than M days go, raw and all.
- ``dropped_days``: messages a rule dropped, older than K days, go.

Rows are handled in batches, each in its own transaction, oldest first; a
batch's blobs are deleted after its commit when no remaining row refers to
them (``blobrefs``) and it was not stored again in the last
``GRACE_SECONDS`` (a message with the same content may be on its way to its
commit; such a blob is kept for good, as no later run names it again). A dry
run does the same work and rolls each batch back, so its counts are what a
real run would remove (blobs shared between two batches of one run are the
exception: counted as kept).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from emaild.casework.events import record_many
from emaild.config_retention import RetentionConfig
from emaild.privacy.blobrefs import (
    BlobsFreed,
    message_blobs,
    quarantined_blobs,
    referenced,
    remove_unreferenced,
)
from emaild.privacy.rowrefs import forget_messages
from emaild.store.blobs import BlobStore
from emaild.store.database import Database
from emaild.store.models import (
    Attachment,
    Case,
    Message,
    OutboxItem,
    QuarantineEntry,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
)

ACTOR = "retention"
BATCH = 2000
# Quarantine entries are parsed again (to name their attachments' blobs) inside
# the batch's transaction: smaller batches keep the write lock short.
QUARANTINE_BATCH = 100
# Batches per rule per run, at most: a run is bounded; the next run goes on.
MAX_BATCHES = 1000
# What the outbox keeps of a sent item once its case's raw bytes are purged.
DONE = ("sent", "failed")
# Longer than any message's time from storing its blobs to its commit (the
# database busy timeout is 30 s by default).
GRACE_SECONDS = 120.0


@dataclass
class PurgeReport:
    """What a purge removed (or, ``dry_run``, would remove)."""

    dry_run: bool
    cases: int = 0  # closed cases whose raw bytes went
    raw_messages: int = 0  # messages whose raw bytes went
    attachments: int = 0  # attachments whose bytes went
    quarantine_entries: int = 0
    dropped_messages: int = 0
    webhook_deliveries: int = 0
    blobs: BlobsFreed = field(default_factory=BlobsFreed)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# (last id handled or None when done, candidate blobs, counts for the report)
Batch = tuple[int | None, set[str], dict[str, int]]


class _Rollback(Exception):
    """Undo a dry run's batch (its transaction, or its savepoint on SQLite)."""


def purge(
    db: Database,
    blobs: BlobStore,
    rules: RetentionConfig,
    now: datetime,
    *,
    dry_run: bool = False,
) -> PurgeReport:
    """Apply ``rules`` as of ``now``; returns what was (or would be) removed."""
    report = PurgeReport(dry_run=dry_run)
    # A blob stored again in the last GRACE_SECONDS (its file touched) is kept: the
    # writer's row may not be committed yet when the references are checked.
    started = time.time() - GRACE_SECONDS
    steps = []
    if rules.closed_case_raw_days:
        cutoff = now - timedelta(days=rules.closed_case_raw_days)
        steps.append(lambda s, after, c=cutoff: _closed_cases(s, c, after, now))
    if rules.quarantine_days:
        cutoff = now - timedelta(days=rules.quarantine_days)
        steps.append(lambda s, after, c=cutoff: _quarantine(s, blobs, c, after))
    if rules.dropped_days:
        cutoff = now - timedelta(days=rules.dropped_days)
        steps.append(lambda s, after, c=cutoff: _dropped(s, c, after))
    if rules.webhook_days:
        cutoff = now - timedelta(days=rules.webhook_days)
        steps.append(lambda s, after, c=cutoff: _webhooks(s, c, after))
    for step in steps:
        after = 0
        for _ in range(MAX_BATCHES):
            batch = _run_batch(db, blobs, step, after, dry_run, report, started)
            if batch is None:
                break
            after = batch
    return report


def _run_batch(
    db: Database,
    blobs: BlobStore,
    step: Any,
    after: int,
    dry_run: bool,
    report: PurgeReport,
    started: float,
) -> int | None:
    """One batch of ``step``; the last id it handled (None: nothing left)."""
    outcome: dict[str, Any] = {}

    def work(session: Session) -> None:
        last, candidates, counts = step(session, after)
        outcome.update(last=last, counts=counts)
        if dry_run:
            used = referenced(session, candidates)
            unused = {s for s in candidates if s} - used
            outcome["would_free"] = [s for s in unused if _older(blobs, s, started)]
            outcome["would_keep"] = len(used) + sum(
                1 for s in unused if blobs.exists(s) and not _older(blobs, s, started)
            )
            raise _Rollback
        outcome["candidates"] = candidates

    try:
        db.run(work, attempts=3)
    except _Rollback:
        report.blobs.kept += outcome["would_keep"]
        for sha in outcome["would_free"]:
            report.blobs.deleted += 1
            report.blobs.bytes += blobs.size(sha) or 0
    if outcome.get("last") is None:
        return None
    for key, n in outcome["counts"].items():
        setattr(report, key, getattr(report, key) + n)
    if not dry_run:
        freed = remove_unreferenced(db, blobs, outcome["candidates"], started=started)
        report.blobs.deleted += freed.deleted
        report.blobs.bytes += freed.bytes
        report.blobs.kept += freed.kept
    return int(outcome["last"])


def _older(blobs: BlobStore, sha: str, cutoff: float) -> bool:
    """Blob ``sha`` exists and was last stored before ``cutoff``."""
    used = blobs.used_at(sha)
    return used is not None and used < cutoff


def _webhooks(session: Session, cutoff: datetime, after: int) -> Batch:
    """A batch of finished webhook deliveries created before ``cutoff``: their attempts,
    the rows, and the events no delivery refers to any more."""
    rows = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.event_id)
        .where(
            WebhookDelivery.status.in_(("delivered", "failed")),
            WebhookDelivery.created_at < cutoff,
            WebhookDelivery.id > after,
        )
        .order_by(WebhookDelivery.id)
        .limit(BATCH)
    ).all()
    if not rows:
        return None, set(), {}
    ids = [int(r[0]) for r in rows]
    events = {int(r[1]) for r in rows}
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
    still = set(
        session.scalars(
            select(WebhookDelivery.event_id).where(WebhookDelivery.event_id.in_(sorted(events)))
        )
    )
    if events - still:
        session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(sorted(events - still))))
    return ids[-1], set(), {"webhook_deliveries": len(ids)}


def _closed_cases(session: Session, cutoff: datetime, after: int, now: datetime) -> Batch:
    """Raw and attachment bytes of a batch of cases closed before ``cutoff``."""
    case_ids = list(
        session.scalars(
            select(Case.id)
            .where(Case.status == "closed", Case.closed_at < cutoff, Case.id > after)
            .order_by(Case.id)
            .limit(BATCH)
        )
    )
    if not case_ids:
        return None, set(), {}
    rows = session.execute(
        select(Message.id, Message.case_id).where(
            Message.case_id.in_(case_ids), Message.raw_sha256 != ""
        )
    ).all()
    message_ids = [int(r[0]) for r in rows]
    per_case: dict[int, int] = {}
    attachments = (
        session.scalars(
            select(Attachment.id).where(
                Attachment.message_id.in_(message_ids), Attachment.sha256 != ""
            )
        ).all()
        if message_ids
        else []
    )
    candidates = message_blobs(session, message_ids)
    if message_ids:
        session.execute(update(Message).where(Message.id.in_(message_ids)).values(raw_sha256=""))
        session.execute(
            update(Attachment).where(Attachment.message_id.in_(message_ids)).values(sha256="")
        )
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.case_id.in_(case_ids), OutboxItem.status.in_(DONE))
            .values(raw=b"")
        )
        for _, case_id in rows:
            assert case_id is not None
            per_case[case_id] = per_case.get(case_id, 0) + 1
        events = [
            (case_id, "case.purged", {"raw_messages": n, "rule": "closed_case_raw_days"})
            for case_id, n in sorted(per_case.items())
        ]
        record_many(session, events, ACTOR, now)
    counts = {
        "cases": len(per_case),
        "raw_messages": len(message_ids),
        "attachments": len(attachments),
    }
    return case_ids[-1], candidates, counts


def _quarantine(session: Session, blobs: BlobStore, cutoff: datetime, after: int) -> Batch:
    """A batch of quarantine entries created before ``cutoff``."""
    rows = session.execute(
        select(QuarantineEntry.id, QuarantineEntry.raw_sha256)
        .where(QuarantineEntry.created_at < cutoff, QuarantineEntry.id > after)
        .order_by(QuarantineEntry.id)
        .limit(QUARANTINE_BATCH)
    ).all()
    if not rows:
        return None, set(), {}
    ids = [int(r[0]) for r in rows]
    candidates: set[str] = set()
    for _, sha in rows:
        candidates |= quarantined_blobs(blobs, str(sha))
    session.execute(delete(QuarantineEntry).where(QuarantineEntry.id.in_(ids)))
    return ids[-1], candidates, {"quarantine_entries": len(ids)}


def _dropped(session: Session, cutoff: datetime, after: int) -> Batch:
    """A batch of dropped messages received before ``cutoff``."""
    ids = list(
        session.scalars(
            select(Message.id)
            .where(Message.state == "dropped", Message.received_at < cutoff, Message.id > after)
            .order_by(Message.id)
            .limit(BATCH)
        )
    )
    if not ids:
        return None, set(), {}
    candidates = message_blobs(session, ids)
    forget_messages(session, ids)
    return ids[-1], candidates, {"dropped_messages": len(ids)}
