"""``Pipeline.ingest``: the one entry point every channel calls.

The raw bytes are written to the blob store first. Stages then run in the order
of ``STAGES``; those that need the database share ONE transaction, opened at the
first of them, so a message is either fully stored or not at all. (On SQLite
that transaction may also carry other messages waiting for the writer, each in
its own SAVEPOINT, committed together: ``Database.transact``.) A stage that
raises (anything but ``TransientError``) sends the message to quarantine, raw
and with the error, and the caller still gets a stored outcome.
"""

from __future__ import annotations

import functools
import hashlib
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from emaild import quarantine
from emaild.addresses import AddressBook
from emaild.config import Config
from emaild.errors import InputError, TransientError, too_large
from emaild.intake import Envelope, IngestResult, Outcome
from emaild.mime.prescan import OverLimit, quick_message_id
from emaild.observe import metrics
from emaild.pipeline.context import IngestContext
from emaild.pipeline.stages import STAGES, Stage
from emaild.services import Services
from emaild.store.blobs import BlobStore
from emaild.store.database import Database, translate_errors
from emaild.store.models import Message
from emaild.store.rows import update_row
from emaild.text import one_line
from emaild.verification.release import INLINE_RELEASE_LIMIT, Released, release_held

log = structlog.get_logger("emaild.pipeline")
# How much of an error the result's ``detail`` (a pipe's line, a log event) repeats.
DETAIL_CHARS = 300


class Pipeline:
    """Parses, decides and stores messages. Thread-safe: one call per message."""

    def __init__(
        self, services: Services, db: Database, *, stages: Sequence[Stage] = STAGES
    ) -> None:
        # Swapped whole on reload (``App.reload``): a message sees one or the other.
        self.services = services
        self.db = db
        self.stages = tuple(stages)

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def blobs(self) -> BlobStore:
        return self.services.blobs

    @property
    def addresses(self) -> AddressBook:
        """The address book (config-declared and managed routing addresses)."""
        return self.services.addresses

    def clock(self) -> datetime:
        return self.services.clock()

    def ingest(
        self,
        raw: bytes,
        envelope: Envelope,
        *,
        store: bool = True,
        also: Callable[[Session], None] | None = None,
        stored_sha256: str = "",
    ) -> IngestResult:
        """Store ``raw`` as a case, an appended message, or a quarantine entry.

        Returns only once the outcome is durably committed. Raises
        ``TransientError`` when storage is unavailable (the caller must not
        acknowledge) and ``InputError`` for input that is not mail at all.
        ``also`` runs in the same transaction just before commit, whatever the
        outcome (the IMAP poller advances its cursor there). With ``store``
        false nothing is written (``emaild rules test``). ``stored_sha256``
        says the caller already stored ``raw`` durably as that blob (the SMTP
        spool): it is not hashed and written again.
        """
        if not store:
            return self._ingest(raw, envelope, store=False, also=also, stored_sha256="")
        started = time.perf_counter()
        try:
            result = self._ingest(raw, envelope, store=True, also=also, stored_sha256=stored_sha256)
        except TransientError:
            metrics.message(envelope.channel, "tempfail", time.perf_counter() - started)
            raise
        except InputError:
            metrics.message(envelope.channel, "invalid", time.perf_counter() - started)
            raise
        metrics.message(envelope.channel, result.outcome.value, time.perf_counter() - started)
        return result

    def _ingest(
        self,
        raw: bytes,
        envelope: Envelope,
        *,
        store: bool,
        also: Callable[[Session], None] | None,
        stored_sha256: str,
    ) -> IngestResult:
        if not raw or raw.isspace():  # strip() would copy a 35 MB message
            raise InputError("empty message")
        services = self.services  # one configuration for the whole message
        limit = services.config.limits.max_message_bytes
        if len(raw) > limit:
            raise too_large(len(raw), limit)
        if store and stored_sha256:
            raw_sha = stored_sha256
        elif store:
            raw_sha, _ = services.blobs.put(raw)
        else:
            raw_sha = hashlib.sha256(raw).hexdigest()
        ctx = IngestContext(
            raw=raw,
            raw_sha256=raw_sha,
            envelope=envelope,
            services=services,
            now=services.clock(),
            dry_run=not store,
            also=also,
        )
        if not store:
            return self._dry_run(ctx)
        bound = log.bind(channel=envelope.channel, peer=envelope.peer, raw_sha256=raw_sha[:16])
        if also is None:
            known = self._stored_before_parsing(raw, raw_sha)
            if known is not None:
                bound.info("ingest.stored", outcome=known.outcome.value, detail=known.detail)
                return known
        try:
            result = self._run(ctx)
        except TransientError as exc:
            bound.warning("ingest.tempfail", error=str(exc))
            raise
        except _StageFailed as failed:
            return self._quarantine(ctx, failed.stage, failed.error, bound)
        bound = bound.bind(
            message_id=ctx.parsed.message_id if ctx.parsed else "", case=result.case_number
        )
        for decision in ctx.trace:  # one event per decision, at debug level
            bound.debug("decision", **decision.as_json())
        bound.info("ingest.stored", outcome=result.outcome.value)
        return result

    def release_held(
        self, address: str | None = None, *, limit: int | None = None
    ) -> list[Released]:
        """Run held mail of verified addresses (or just ``address``) through the pipeline."""
        return release_held(self.ingest, self.db, self.blobs, self.addresses, address, limit=limit)

    # ------------------------------------------------------------------
    def _run(self, ctx: IngestContext) -> IngestResult:
        # The stages before the first that needs the database run here, outside
        # any transaction (parsing never holds the write lock); the rest run in
        # the message's one transaction, a unit of ``Database.transact``.
        remaining: tuple[Stage, ...] = ()
        for index, stage in enumerate(self.stages):
            if stage.needs_session:
                remaining = self.stages[index:]
                break
            _run_stage(stage, ctx)
            if ctx.stopped:
                break
        if remaining or ctx.also is not None:
            try:
                self.db.transact(functools.partial(self._transaction, ctx, remaining))
            except IntegrityError as exc:
                # Another worker stored the same message first (contract 2); any
                # other constraint failure is this message's problem: quarantine.
                duplicate = self._duplicate_after_race(ctx)
                if duplicate is not None:
                    return duplicate
                raise _StageFailed("persist", exc) from exc
        # Held mail of an address this message verified is released once the
        # message is durably stored; its failure must not turn a stored message
        # into a retry.
        for address in ctx.verified_addresses:
            try:
                self.addresses.invalidate()
                self.release_held(address, limit=INLINE_RELEASE_LIMIT)
            except Exception as exc:
                log.error("ingest.release_failed", error=f"{type(exc).__name__}: {exc}")
        return IngestResult(
            outcome=ctx.outcome or Outcome.NEW_CASE,
            case_number=ctx.case.id if ctx.case is not None else None,
            message_row_id=ctx.message.id if ctx.message is not None else None,
            quarantine_id=ctx.quarantine_id,
            detail=ctx.disposition_reason,
            trace=tuple(ctx.trace_json()),
        )

    @staticmethod
    def _transaction(ctx: IngestContext, stages: Sequence[Stage], session: Session) -> None:
        """The message's database work, in ``session``: committed by the caller."""
        ctx.session = session
        try:
            for stage in stages:
                _run_stage(stage, ctx)
                if ctx.stopped:
                    break
            for hook in ctx.before_commit:
                _guarded("before_commit", hook, ctx)
            if ctx.message is not None and not ctx.duplicate:
                update_row(session, ctx.message, decision_trace=ctx.trace_json())
            if ctx.also is not None:
                with translate_errors():
                    ctx.also(session)
        finally:
            ctx.session = None

    def _dry_run(self, ctx: IngestContext) -> IngestResult:
        """Run the stages that do not need the database (``emaild rules test``)."""
        for stage in self.stages:
            if stage.needs_session:
                break
            try:
                _run_stage(stage, ctx)
            except _StageFailed as failed:  # ingesting it would quarantine it: say so
                detail = f"{failed.stage}: {type(failed.error).__name__}: {failed.error}"
                return IngestResult(
                    Outcome.QUARANTINED, detail=detail, trace=tuple(ctx.trace_json())
                )
            if ctx.stopped:
                break
        return IngestResult(
            outcome=ctx.outcome or Outcome.NEW_CASE,
            detail=ctx.disposition_reason,
            trace=tuple(ctx.trace_json()),
        )

    def _stored_before_parsing(self, raw: bytes, raw_sha: str) -> IngestResult | None:
        """The stored copy of these bytes or this Message-ID, found without parsing.

        A retry of mail that was slow to store (the sender got 451, the worker
        committed later) must get its 250 at once, not cost a parse and time
        out again (issue 18 §2). The keys are those ``deduplicate`` uses; a held
        copy is left to the pipeline, which releases it.
        """
        mid = quick_message_id(raw)
        keys = {"sha": f"sha256:{raw_sha}", "mid": f"mid:{mid}" if mid else ""}
        with self.db.reading() as conn:
            row = conn.execute(_STORED_BEFORE, keys).first()
        if row is None:
            return None
        return IngestResult(
            Outcome.DUPLICATE,
            case_number=row.case_id,
            message_row_id=row.id,
            detail="already stored (found before parsing)",
        )

    def _duplicate_after_race(self, ctx: IngestContext) -> IngestResult | None:
        """The copy a concurrent writer committed first, if that is what collided."""
        if ctx.parsed is None:
            return None
        key = ctx.parsed.dedup_key
        with self.db.session(readonly=True) as session:
            row = session.scalars(select(Message).where(Message.dedup_key == key)).first()
            if row is None:
                return None
            return IngestResult(
                Outcome.DUPLICATE,
                case_number=row.case_id,
                message_row_id=row.id,
                detail="stored concurrently",
            )

    def _quarantine(
        self, ctx: IngestContext, stage: str, error: BaseException, bound: Any
    ) -> IngestResult:
        # One short line for operators and MTAs (a parser's error can run to
        # kilobytes); the whole error and its traceback go into the quarantine
        # entry (``emaild quarantine show``) and the debug log.
        detail = one_line(f"{type(error).__name__}: {error}", DETAIL_CHARS)
        stack = "".join(traceback.format_exception(error))[-6000:]
        not_a_message = isinstance(error, InputError) and stage == "parse"
        reason = "unusable" if not_a_message else "error"
        if isinstance(error, OverLimit):
            reason = "over_limit"
        bound.debug("ingest.quarantined_traceback", stage=stage, traceback=stack[-4000:])
        held = ctx.held(
            stage=stage,
            error=f"{type(error).__name__}: {error}\n\n{stack}",
            reason=reason,
        )
        entry_id = quarantine.record(self.db, held, ctx.now, also=ctx.also)
        bound.warning("ingest.quarantined", stage=stage, error=detail, quarantine_id=entry_id)
        return IngestResult(
            Outcome.QUARANTINED,
            quarantine_id=entry_id,
            detail=detail,
            trace=tuple(ctx.trace_json()),
            not_a_message=not_a_message,
        )


# ``_stored_before_parsing``'s lookup, built once ("" never matches a key).
_STORED_BEFORE = (
    select(Message.id, Message.case_id)
    .where(
        Message.dedup_key.in_([bindparam("sha"), bindparam("mid")]),
        Message.state != "held",
    )
    .limit(1)
)


class _StageFailed(Exception):
    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(stage)
        self.stage = stage
        self.error = error


def _run_stage(stage: Stage, ctx: IngestContext) -> None:
    if not metrics.enabled():
        _guarded(stage.name, stage, ctx)
        return
    started = time.perf_counter()
    try:
        _guarded(stage.name, stage, ctx)
    finally:
        metrics.stage(stage.name, time.perf_counter() - started)


def _guarded(name: str, call: Callable[[IngestContext], None], ctx: IngestContext) -> None:
    """Run a stage or hook: outages become ``TransientError``, other errors quarantine."""
    try:
        call(ctx)
    except (TransientError, _StageFailed, IntegrityError):
        # IntegrityError: PostgreSQL checks the unique dedup key at the INSERT, so a
        # concurrent copy of this message surfaces here; ``_run`` tells which it was.
        raise
    except InputError as exc:
        raise _StageFailed(name, exc) from exc
    except Exception as exc:
        if _is_database_outage(exc):
            raise TransientError(f"database unavailable: {exc}") from exc
        raise _StageFailed(name, exc) from exc


def _is_database_outage(exc: Exception) -> bool:
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
