"""The daily cap: over it a submission is held (raw, in quarantine), never lost.

Each form counts what it let through per UTC day in ``webform_days`` (one
row per form and day, the count raised in a transaction of its own, so every
worker and the release job see one number). A submission over the cap is
kept as a quarantine entry with reason ``daily_cap``; the release job runs
held entries of earlier days through the pipeline while today has room, and
``emaild web release`` runs them at once whatever the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emaild import quarantine
from emaild.component import PeriodicJob
from emaild.config import WebformConfig
from emaild.errors import InputError, TransientError
from emaild.intake import IngestResult, Outcome
from emaild.store.database import Database
from emaild.store.models import QuarantineEntry, WebformDay

log = structlog.get_logger("emaild.webform")

REASON = "daily_cap"
# Waiting for the submitter to confirm the address (emaild.webform.confirm).
CONFIRM_REASON = "confirm_email"
STAGE_PREFIX = "webform:"
RELEASE_JOB_SECONDS = 300


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).date().isoformat()


def _start_of_day(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def reserve(db: Database, form: str, now: datetime, cap: int, *, force: bool = False) -> bool:
    """Count one submission of ``form`` today; False (nothing counted) at the cap."""
    day = day_of(now)

    def work(session: Session) -> bool:
        row = session.get(WebformDay, (form, day), with_for_update=True)
        if row is None:
            row = WebformDay(form=form, day=day, admitted=0)
            with session.begin_nested():
                session.add(row)
        if not force and row.admitted >= cap:
            return False
        row.admitted += 1
        return True

    for _ in range(3):  # two first submissions of the day race to insert the row
        try:
            return db.run(work, attempts=3)
        except IntegrityError:
            continue
    raise TransientError("could not count the submission against the daily cap")


def unreserve(db: Database, form: str, now: datetime) -> None:
    """Give back a count (the submission turned out to be a repeat)."""
    day = day_of(now)

    def work(session: Session) -> None:
        row = session.get(WebformDay, (form, day), with_for_update=True)
        if row is not None and row.admitted > 0:
            row.admitted -= 1

    db.run(work, attempts=3)


def admitted_today(db: Database, form: str, now: datetime) -> int:
    with db.session(readonly=True) as session:
        row = session.get(WebformDay, (form, day_of(now)))
        return row.admitted if row is not None else 0


def hold(
    db: Database,
    form: str,
    cap: int,
    *,
    raw_sha256: str,
    raw: bytes,
    sender: str,
    to: str,
    now: datetime,
) -> int:
    """Keep a submission over the cap; returns the quarantine entry's id."""
    held = quarantine.Held(
        channel="web",
        reason=REASON,
        stage=STAGE_PREFIX + form,
        error=f"over the daily cap of {cap} submissions of web form {form}",
        raw_sha256=raw_sha256,
        raw_size=len(raw),
        headers=quarantine.header_block(raw),
        envelope_from=sender,
        envelope_to=(to,),
    )
    return quarantine.record(db, held, now)


def held_entries(db: Database, form: str | None = None) -> list[dict[str, Any]]:
    """Held submissions (all forms, or one; over the cap or unconfirmed), oldest first."""
    with db.session(readonly=True) as session:
        query = select(QuarantineEntry).where(
            QuarantineEntry.status == quarantine.HELD,
            QuarantineEntry.reason.in_((REASON, CONFIRM_REASON)),
        )
        if form is not None:
            query = query.where(QuarantineEntry.stage == STAGE_PREFIX + form)
        rows = session.scalars(query.order_by(QuarantineEntry.id)).all()
        return [
            {**quarantine.entry_json(e), "form": e.stage.removeprefix(STAGE_PREFIX)} for e in rows
        ]


@dataclass(frozen=True)
class Released:
    entry: int
    form: str
    result: IngestResult


def release(
    pipeline: Any,
    caps: dict[str, int],
    *,
    entries: list[int] | None = None,
    form: str | None = None,
    force: bool = False,
    limit: int = 1000,
) -> list[Released]:
    """Run held submissions through the pipeline, oldest first.

    Without ``force`` only entries of earlier days go, each while its form has
    room today (``caps``: form name -> daily cap); with ``force`` (an admin)
    the cap is counted but not enforced. ``entries`` picks entry ids.
    """
    now: datetime = pipeline.clock()
    today = _start_of_day(now)
    out: list[Released] = []
    full: set[str] = set()
    for entry in held_entries(pipeline.db, form)[:limit]:
        name = entry["form"]
        if entries is not None and entry["id"] not in entries:
            continue
        if name in full:
            continue
        if not force and (
            entry["reason"] != REASON or datetime.fromisoformat(entry["created_at"]) >= today
        ):
            continue  # the job waits for tomorrow, and for a confirmation
        if not reserve(pipeline.db, name, now, caps.get(name, 0), force=force):
            full.add(name)
            continue
        try:
            result = quarantine.retry(pipeline, entry["id"])
        except TransientError:
            unreserve(pipeline.db, name, now)
            log.warning("webform.release_stopped", entry=entry["id"])
            break
        except InputError as exc:
            # Never accepted as it is (e.g. over a limit lowered since): it stays
            # held under a reason of its own, out of the job's way, for an admin.
            unreserve(pipeline.db, name, now)
            quarantine.set_reason(pipeline.db, entry["id"], "unreleasable", str(exc))
            log.error("webform.release_refused", entry=entry["id"], form=name, error=str(exc))
            continue
        if result.outcome is Outcome.DUPLICATE:
            unreserve(pipeline.db, name, now)
        out.append(Released(entry["id"], name, result))
        log.info("webform.released", entry=entry["id"], form=name, case=result.case_number)
    return out


def release_due(pipeline: Any, forms: list[WebformConfig]) -> list[Released]:
    """The release job's work: earlier days' held submissions, as today's caps allow."""
    if not forms:
        return []
    return release(pipeline, {f.name: f.daily_cap for f in forms})


def release_job(app: Any) -> PeriodicJob | None:
    """``emaild run`` factory: the job runs when forms are configured (reads them per run)."""
    if not app.config.webform:
        return None
    return PeriodicJob(
        "webform.release",
        lambda: release_due(app.pipeline, app.config.webform),
        RELEASE_JOB_SECONDS,
    )
