"""``persist``: write the case, the message, its attachments and participants.

A new case's subject terms go to ``case_terms`` too (the reports' topic view).

A message kept without a case (held, dropped) gets its message row with that
state; one a rule or accept-from quarantined gets a quarantine entry instead,
in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect

from emaild import quarantine
from emaild.casework.events import MAIL, record_many
from emaild.correlation.loops import fingerprint as message_fingerprint
from emaild.correlation.strangers import FLAGGED
from emaild.pipeline.context import IngestContext, Outcome
from emaild.pipeline.stages.unwrap import case_customer
from emaild.reports.topics import index_case
from emaild.store.models import Case, Message
from emaild.store.rows import add_participants, insert_attachments, insert_row
from emaild.trust.policy import cap_followers

# The quarantine's reason for a policy hold, by the stage that asked for it.
_QUARANTINE_REASONS = {"accept": "accept_from", "authenticate": "auth"}


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
            customer_addr, customer_name = case_customer(ctx)  # a forward: the original sender
            ctx.case = insert_row(
                session,
                Case,
                {
                    "subject": ctx.display_subject or p.subject,
                    "status": "new",
                    "priority": ctx.fields.priority,
                    "origin": ctx.fields.origin,
                    "owner": ctx.fields.owner,
                    "category": ctx.fields.category,
                    "tags": list(ctx.fields.tags),
                    "routing_address": ctx.routing.address,
                    "customer": customer_addr,
                    "customer_name": customer_name,
                    "linked_case_id": ctx.linked_case_id,
                    "mentioned_number": ctx.mentioned_number,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            ctx.outcome = Outcome.NEW_CASE
            index_case(session, ctx.case.id, ctx.case.subject, now)  # the topic view's terms
        else:
            ctx.case.updated_at = now
            ctx.outcome = Outcome.APPENDED
        if not ctx.flagged:
            # A stranger's flagged message adds nobody: its To/Cc are the stranger's choice.
            self._participants(ctx, new=ctx.outcome is Outcome.NEW_CASE)
        state = FLAGGED if ctx.flagged else "stored"
        ctx.message = self._message(ctx, state=state, case_id=ctx.case.id)
        # The case's history, in this same transaction (webhooks deliver it).
        events: list[tuple[int, str, dict[str, Any]]] = [
            (ctx.case.id, "message.received", {"message": ctx.message.id})
        ]
        if ctx.outcome is Outcome.NEW_CASE:
            events.insert(0, (ctx.case.id, "case.created", {"channel": ctx.envelope.channel}))
        else:
            if ctx.classification is not None and ctx.classification.is_bounce:
                # A bounce of our mail threaded onto its case (correlation/bounce.py).
                events.append((ctx.case.id, "message.bounced", {"message": ctx.message.id}))
            status = inspect(ctx.case).attrs.status.history
            if status.deleted and status.added:  # correlate reopened it (closed-case policy)
                ctx.case.version += 1
                change = {"field": "status", "from": status.deleted[0], "to": status.added[0]}
                events.append((ctx.case.id, "case.status", change))
        record_many(session, events, MAIL, now)
        ctx.decide(self.name, ctx.outcome.value, case=ctx.case.id, message_row=ctx.message.id)

    def _quarantine(self, ctx: IngestContext) -> None:
        """Hold the message in quarantine in this same transaction (no message row)."""
        assert ctx.session is not None
        by = ctx.disposition_stage or "rules"
        entry = quarantine.hold(
            ctx.session,
            ctx.held(
                stage=by,
                error=ctx.disposition_reason,
                reason=_QUARANTINE_REASONS.get(by, "rule"),
            ),
            ctx.now,
        )
        ctx.quarantine_id = entry
        ctx.decide(self.name, "quarantined", reason=ctx.disposition_reason, entry=entry)
        ctx.stop(Outcome.QUARANTINED)

    @staticmethod
    def _message(ctx: IngestContext, *, state: str, case_id: int | None) -> Message:
        """Insert the message row and its attachments' rows."""
        p = ctx.parsed
        assert p is not None and ctx.routing is not None and ctx.session is not None
        cls = ctx.classification
        fingerprint = ctx.fingerprint or message_fingerprint(p)
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
                "new_text": p.text if ctx.new_text is None else ctx.new_text,
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

    def _participants(self, ctx: IngestContext, *, new: bool) -> None:
        assert ctx.case is not None and ctx.session is not None and ctx.parsed is not None
        own = ctx.services.addresses.own_addresses()
        wanted: dict[str, str] = {}
        customer = case_customer(ctx)[0] if new else ctx.parsed.customer_addr
        if customer:  # From, else Reply-To when From is unusable; a forward's original
            wanted[customer] = "customer"
        if ctx.forwarder:
            wanted.setdefault(ctx.forwarder, "forwarder")
        copied = [a.addr for a in ctx.parsed.cc + ctx.parsed.to if a.addr not in own]
        kept, left_out = cap_followers(copied, ctx.config.trust.max_cc_participants, wanted)
        if left_out:
            ctx.decide(self.name, "cc cap", not_added=left_out[:20], left_out=len(left_out))
        wanted.update(dict.fromkeys(kept, "cc"))
        wanted = {a: r for a, r in wanted.items() if a not in own}
        add_participants(ctx.session, ctx.case.id, wanted, new=new)
