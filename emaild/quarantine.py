"""Quarantine: messages kept raw with the error that stopped them (contract 3)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from emaild.errors import InputError
from emaild.pipeline import Envelope, IngestResult, Outcome, Pipeline
from emaild.store.models import QuarantineEntry


def entry_json(e: QuarantineEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "created_at": e.created_at.isoformat(),
        "channel": e.channel,
        "envelope_from": e.envelope_from,
        "envelope_to": list(e.envelope_to or []),
        "raw_sha256": e.raw_sha256,
        "raw_size": e.raw_size,
        "reason": e.reason,
        "stage": e.stage,
        "error": e.error,
        "status": e.status,
        "attempts": e.attempts,
        "message_row": e.message_row_id,
    }


def list_entries(pipeline: Pipeline, status: str | None = "held") -> list[dict[str, Any]]:
    with pipeline.db.session() as session:
        query = select(QuarantineEntry).order_by(QuarantineEntry.id)
        if status:
            query = query.where(QuarantineEntry.status == status)
        return [entry_json(e) for e in session.scalars(query)]


def get_entry(pipeline: Pipeline, entry_id: int) -> QuarantineEntry | None:
    with pipeline.db.session() as session:
        return session.get(QuarantineEntry, entry_id)


def retry(pipeline: Pipeline, entry_id: int, *, release: bool = False) -> IngestResult:
    """Run a held message through the pipeline again (after a fix).

    With ``release`` the operator overrides a policy quarantine (a rule's or
    accept-from's): the message goes through every stage except that quarantine.
    """
    entry = get_entry(pipeline, entry_id)
    if entry is None:
        raise InputError(f"no quarantine entry {entry_id}")
    if entry.status != "held":
        raise InputError(f"quarantine entry {entry_id} is {entry.status}, not held")
    if not entry.raw_sha256 or not pipeline.blobs.exists(entry.raw_sha256):
        raise InputError(
            f"quarantine entry {entry_id} has no stored raw message (it was too large to fetch)"
        )
    raw = pipeline.blobs.read(entry.raw_sha256)
    # Not a live SMTP session any more: a policy "reject" now keeps the raw mail
    # (state dropped) instead of refusing it, so nothing held is ever lost.
    envelope = Envelope(
        channel="quarantine",
        release=release,
        mail_from=entry.envelope_from,
        rcpt_to=tuple(entry.envelope_to or ()),
        routing_hint=(entry.envelope_to or [""])[0],
    )
    result = pipeline.ingest(raw, envelope)
    if result.outcome is not Outcome.QUARANTINED or result.quarantine_id != entry_id:

        def mark_released(session: Any) -> None:
            row = session.get(QuarantineEntry, entry_id)
            row.status = "released"
            row.message_row_id = result.message_row_id
            row.last_attempt_at = pipeline.clock()

        pipeline.db.run(mark_released)
    return result
