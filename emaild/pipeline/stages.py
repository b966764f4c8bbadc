"""The stages of ``Pipeline.ingest``, in order. ``STAGES`` is the whole pipeline.

Each stage is a small object with a ``name``, a one-line ``description`` and a
``__call__(ctx)``. Stages with ``needs_session`` run inside the message's one
database transaction; the others run before it is opened, so parsing never
holds a database lock. A stage records every decision it takes with
``ctx.decide`` so the stored message explains itself.
"""

from __future__ import annotations

from typing import Protocol

from emaild.autoresponse.bounces import record_bounce
from emaild.autoresponse.loopdetect import detect_loop
from emaild.autoresponse.loopdetect import fingerprint as message_fingerprint
from emaild.autoresponse.respond import autorespond
from emaild.classify import classify
from emaild.correlation.match import correlate
from emaild.correlation.newtext import new_text
from emaild.correlation.subject import display_subject
from emaild.correlation.tokens import load_signer
from emaild.mime.parse import parse_message
from emaild.pipeline.context import CaseFields, IngestContext, Outcome
from emaild.rules.apply import apply_accept_from, apply_rules
from emaild.store.models import Case, Message
from emaild.store.rows import add_participants, insert_attachments, insert_row, stored_with_key
from emaild.verification import screen as verification


class Stage(Protocol):
    name: str
    description: str
    needs_session: bool

    def __call__(self, ctx: IngestContext) -> None: ...


class ParseStage:
    name = "parse"
    description = "decode headers, bodies and attachments; spool attachments to the blob store"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        limits = ctx.config.limits
        # A dry run (``emaild rules test``) stores nothing: attachments are only hashed.
        sink = None if ctx.extra.get("dry_run") else ctx.pipeline.blobs
        ctx.parsed = parse_message(
            ctx.raw,
            spool_threshold=limits.spool_part_bytes,
            sink=sink if sink else None,
            raw_sha256=ctx.raw_sha256,
        )
        p = ctx.parsed
        ctx.decide(
            self.name,
            "parsed",
            message_id=p.message_id,
            subject=p.subject,
            attachments=len(p.attachments),
            defects=len(p.defects),
        )
        big = [a.filename for a in p.attachments if a.size > limits.max_attachment_bytes]
        if big:
            ctx.decide(
                self.name,
                "attachment over limit kept",
                files=big,
                limit=limits.max_attachment_bytes,
            )


class RouteStage:
    name = "route"
    description = "choose the routing address: channel hint, envelope, then headers, else default"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None
        book = ctx.pipeline.addresses
        candidates: list[tuple[str, str]] = []
        if ctx.envelope.routing_hint:
            candidates.append(("channel", ctx.envelope.routing_hint))
        candidates += [("envelope", r) for r in ctx.envelope.rcpt_to]
        for header in ("delivered-to", "x-original-to", "envelope-to"):
            candidates += [(header, v.strip()) for v in ctx.parsed.header_all(header)]
        candidates += [("to", a.addr) for a in ctx.parsed.to]
        candidates += [("cc", a.addr) for a in ctx.parsed.cc]
        for source, address in candidates:
            routing = book.lookup(address)
            if routing is not None:
                ctx.routing = routing
                ctx.decide(
                    self.name,
                    "routing address",
                    address=routing.address,
                    via=source,
                    matched=address.lower(),
                )
                break
        else:
            ctx.routing = book.default()
            ctx.decide(self.name, "routing address", address=ctx.routing.address, via="default")
        r = ctx.routing
        ctx.fields = CaseFields(
            priority=r.priority,
            origin=r.origin,
            owner=r.owner,
            category=r.category,
            tags=list(r.tags),
            auto_response=r.auto_response,
        )
        ctx.decide(self.name, "routing defaults", **ctx.fields.as_json())


class AcceptStage:
    name = "accept"
    description = "apply the routing address's accept_from list (reject, discard or quarantine)"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        apply_accept_from(ctx, self.name)


class ClassifyStage:
    name = "classify"
    description = "flag auto-submitted, bulk, bounce, report, vacation and reply mail"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None
        mail_from = ctx.envelope.mail_from if ctx.envelope.channel in ("smtp", "lmtp") else None
        ctx.classification = classify(ctx.parsed, mail_from)
        ctx.decide(self.name, "classified", flags=list(ctx.classification.reasons))


class RulesStage:
    name = "rules"
    description = "apply rules/*.toml: case fields, auto-response, quarantine or drop"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        apply_rules(ctx, ctx.pipeline.services.get("rules"), self.name)


class VerifyStage:
    name = "verify"
    description = (
        "mail carrying a verification or forwarding-test token is recorded, never a case;"
        " mail for an unverified address is held; a held copy is released once verified"
    )
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        verification.screen(ctx, self.name)


class DeduplicateStage:
    name = "deduplicate"
    description = "a message already stored (same Message-ID, or same bytes) is not stored again"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.session is not None
        key = ctx.parsed.dedup_key
        if verification.STORED_ROW in ctx.extra:  # verify looked it up already
            stored = ctx.extra[verification.STORED_ROW]
        else:
            stored = stored_with_key(ctx.session, key)
        existing = ctx.session.get(Message, stored[0]) if stored is not None else None
        if existing is None:
            return
        ctx.message = existing
        ctx.case = existing.case
        ctx.decide(self.name, "duplicate", key=key, message_row=existing.id, case=existing.case_id)
        ctx.extra["duplicate"] = True
        ctx.stop(Outcome.DUPLICATE)


class CorrelateStage:
    name = "correlate"
    description = "find the case this message belongs to (threading), else a new case"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.session is not None and ctx.routing is not None
        signer = ctx.pipeline.services.get("signer")
        if signer is None:
            signer = ctx.pipeline.services["signer"] = load_signer(ctx.config)
        ctx.extra["new_text"] = new_text(ctx.parsed.text)
        ctx.extra["display_subject"] = display_subject(
            ctx.parsed.subject, signer.strip_subject_tokens
        )
        if ctx.disposition in (Outcome.DROPPED, Outcome.HELD):
            ctx.decide(self.name, "not threaded", reason=f"message is {ctx.disposition.value}")
            return
        routing, book = ctx.routing, ctx.pipeline.addresses
        result = correlate(
            ctx.session,
            signer,
            ctx.parsed,
            raw=ctx.raw,
            classification=ctx.classification,
            now=ctx.now,
            policy_for=lambda case: book.lookup(case.routing_address) or routing,
        )
        ctx.case = result.case
        ctx.linked_case_id = result.linked_case_id
        ctx.mentioned_number = result.mentioned_number
        for decision, evidence in result.trace:
            ctx.decide(self.name, decision, **evidence)


class LoopDetectStage:
    name = "loopdetect"
    description = "a burst of identical messages (sender, subject, body) joins one case"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        detect_loop(ctx)


class PersistStage:
    name = "persist"
    description = "write the case, message, attachments and participants"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.session is not None and ctx.routing is not None
        session, p, now = ctx.session, ctx.parsed, ctx.now
        if ctx.case is None and ctx.disposition is None and ctx.new_case_disposition:
            # A rule said this message may not open a case on its own (bounce, auto-reply).
            ctx.disposition = ctx.new_case_disposition
            ctx.disposition_reason = ctx.new_case_reason
        if ctx.disposition is Outcome.QUARANTINED:
            self._quarantine(ctx)
            return
        if ctx.disposition in (Outcome.DROPPED, Outcome.HELD):
            ctx.message = self._message(ctx, state=ctx.disposition.value, case_id=None)
            ctx.decide(self.name, ctx.disposition.value, reason=ctx.disposition_reason)
            ctx.stop(ctx.disposition)
            return
        if ctx.case is None:
            customer = p.reply_to or p.from_
            ctx.case = insert_row(
                session,
                Case,
                {
                    "subject": str(ctx.extra.get("display_subject") or p.subject),
                    "status": "new",
                    "priority": ctx.fields.priority,
                    "origin": ctx.fields.origin,
                    "owner": ctx.fields.owner,
                    "category": ctx.fields.category,
                    "tags": list(ctx.fields.tags),
                    "routing_address": ctx.routing.address,
                    "customer": p.from_addr,
                    "customer_name": customer.name if customer else "",
                    "linked_case_id": ctx.linked_case_id,
                    "mentioned_number": ctx.mentioned_number,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            ctx.outcome = Outcome.NEW_CASE
        else:
            ctx.case.updated_at = now
            ctx.outcome = Outcome.APPENDED
        self._participants(ctx, new=ctx.outcome is Outcome.NEW_CASE)
        ctx.message = self._message(ctx, state="stored", case_id=ctx.case.id)
        ctx.decide(self.name, ctx.outcome.value, case=ctx.case.id, message_row=ctx.message.id)

    def _quarantine(self, ctx: IngestContext) -> None:
        """Hold the message in quarantine in this same transaction (no message row)."""
        from emaild.pipeline.core import add_quarantine_entry  # core imports this module

        assert ctx.session is not None
        by = str(ctx.extra.get("disposition_stage") or "rules")
        entry = add_quarantine_entry(
            ctx.session,
            ctx,
            stage=by,
            error=ctx.disposition_reason,
            reason="accept_from" if by == "accept" else "rule",
        )
        ctx.extra["quarantine_id"] = entry
        ctx.decide(self.name, "quarantined", reason=ctx.disposition_reason, entry=entry)
        ctx.stop(Outcome.QUARANTINED)

    @staticmethod
    def _message(ctx: IngestContext, *, state: str, case_id: int | None) -> Message:
        """Insert the message row and its attachments' rows."""
        p = ctx.parsed
        assert p is not None and ctx.routing is not None and ctx.session is not None
        cls = ctx.classification
        fingerprint = str(ctx.extra.get("fingerprint") or message_fingerprint(p))
        message = insert_row(
            ctx.session,
            Message,
            {
                "case_id": case_id,
                "direction": "in",
                "state": state,
                "dedup_key": p.dedup_key,
                "message_id": p.message_id,
                "in_reply_to": p.in_reply_to,
                "references": p.references,
                "thread_index": p.thread_index,
                "from_addr": p.from_addr,
                "from_name": p.from_.name if p.from_ else "",
                "reply_to": p.reply_to.addr if p.reply_to else "",
                "to": [str(a) for a in p.to],
                "cc": [str(a) for a in p.cc],
                "subject": p.subject,
                "text": p.text,
                "html": p.html,
                "new_text": str(ctx.extra.get("new_text", p.text)),
                "headers": [list(h) for h in p.headers] if ctx.routing.save_headers else [],
                "raw_sha256": ctx.raw_sha256,
                "raw_size": len(ctx.raw),
                "channel": ctx.envelope.channel,
                "envelope_from": ctx.envelope.mail_from,
                "envelope_to": list(ctx.envelope.rcpt_to),
                "routing_address": ctx.routing.address,
                "is_auto": bool(cls and cls.is_auto),
                "is_bounce": bool(cls and cls.is_bounce),
                "fingerprint": fingerprint,
                "defects": p.defects,
                "date": p.date,
                "received_at": ctx.now,
            },
        )
        insert_attachments(
            ctx.session,
            message.id,
            (
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "content_id": a.content_id,
                    "disposition": a.disposition,
                    "size": a.size,
                    "sha256": a.sha256,
                }
                for a in p.attachments
            ),
        )
        return message

    @staticmethod
    def _participants(ctx: IngestContext, *, new: bool) -> None:
        assert ctx.case is not None and ctx.session is not None and ctx.parsed is not None
        own = ctx.pipeline.addresses.own_addresses()
        wanted: dict[str, str] = {}
        if ctx.parsed.from_addr:
            wanted[ctx.parsed.from_addr] = "customer"
        for other in ctx.parsed.cc + ctx.parsed.to:
            wanted.setdefault(other.addr, "cc")
        wanted = {a: r for a, r in wanted.items() if a not in own}
        add_participants(ctx.session, ctx.case.id, wanted, new=new)


class AutoRespondStage:
    name = "autorespond"
    description = "queue the auto-response in the outbox, unless loop protection says no"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        if ctx.session is None:
            return
        record_bounce(ctx)
        autorespond(ctx)


STAGES: tuple[Stage, ...] = (
    ParseStage(),
    RouteStage(),
    AcceptStage(),
    ClassifyStage(),
    RulesStage(),
    VerifyStage(),
    DeduplicateStage(),
    CorrelateStage(),
    LoopDetectStage(),
    PersistStage(),
    AutoRespondStage(),
)
