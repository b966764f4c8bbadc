"""``correlate``: threading. Find the case this message belongs to, else a new case."""

from __future__ import annotations

from emaild.correlation.match import correlate
from emaild.correlation.newtext import new_text
from emaild.correlation.strangers import Members
from emaild.correlation.subject import display_subject
from emaild.pipeline.context import IngestContext, Outcome
from emaild.pipeline.stages.authenticate import thread_gate


class CorrelateStage:
    name = "correlate"
    description = "find the case this message belongs to (threading), else a new case"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.session is not None and ctx.routing is not None
        signer = ctx.services.signer
        ctx.new_text = new_text(ctx.parsed.text)
        ctx.display_subject = display_subject(ctx.parsed.subject, signer.strip_subject_tokens)
        if ctx.disposition in (Outcome.DROPPED, Outcome.HELD):
            ctx.decide(self.name, "not threaded", reason=f"message is {ctx.disposition.value}")
            return
        routing, book = ctx.routing, ctx.services.addresses
        result = correlate(
            ctx.session,
            signer,
            ctx.parsed,
            raw=ctx.raw,
            classification=ctx.classification,
            now=ctx.now,
            policy_for=lambda case: book.lookup(case.routing_address) or routing,
            gate=thread_gate(ctx),
            members=Members.of(book.own_addresses(), ctx.config.threading.internal_senders),
        )
        ctx.case = result.case
        ctx.flagged = result.flagged
        ctx.linked_case_id = result.linked_case_id
        ctx.mentioned_number = result.mentioned_number
        for decision, evidence in result.trace:
            ctx.decide(self.name, decision, **evidence)
