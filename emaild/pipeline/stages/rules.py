"""``rules``: ``rules/*.toml`` set the case fields and may quarantine or drop the message.

Every decision goes into the decision trace, so ``emaild cases show`` explains
a case's priority and origin and ``emaild rules test`` shows the same thing
without storing.
"""

from __future__ import annotations

from typing import Any

from emaild.pipeline.context import IngestContext, Outcome
from emaild.rules import MessageFacts

_DISPOSITIONS = {"quarantine": Outcome.QUARANTINED, "drop": Outcome.DROPPED}


def facts_for(ctx: IngestContext) -> MessageFacts:
    """The rule-visible facts of the message in ``ctx``."""
    assert ctx.parsed is not None
    book = ctx.services.addresses

    def resolve(address: str) -> str | None:
        routing = book.lookup(address)
        return routing.address if routing is not None else None

    return MessageFacts(
        ctx.parsed,
        ctx.classification,
        ctx.routing,
        channel=ctx.envelope.channel,
        envelope_from=ctx.envelope.mail_from,
        envelope_to=ctx.envelope.rcpt_to,
        resolve=resolve,
        verdicts=ctx.verdicts,
    )


class RulesStage:
    name = "rules"
    description = "apply rules/*.toml: case fields, auto-response, quarantine or drop"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        stage, rules = self.name, ctx.services.rules
        if ctx.disposition is not None:
            ctx.decide(
                stage, "skipped", reason=f"already {ctx.disposition.value} by the routing policy"
            )
            return
        outcome = rules.evaluate(facts_for(ctx), ctx.fields)
        for match, changed in zip(outcome.matches, outcome.changes, strict=True):
            rule = match.rule
            ctx.decide(
                stage,
                "matched",
                rule=rule.name,
                at=rule.where,
                description=rule.description,
                because=match.because,
                actions=rule.actions.as_json(),
                changed=changed,
            )
        if outcome.timeouts:
            ctx.decide(stage, "regex timed out", treated_as="no match", searches=outcome.timeouts)
        if not outcome.matches:
            ctx.decide(stage, "no rule matched", rules=len(rules), kept="routing defaults")
        if outcome.stopped_by:
            rest = len(rules) - 1 - next(m.rule.position for m in outcome.matches[::-1])
            ctx.decide(stage, "stopped", rule=outcome.stopped_by, not_evaluated=rest)
        ctx.fields = outcome.fields
        default = f"routing address {ctx.routing.address}" if ctx.routing else "default"
        set_by: dict[str, Any] = {
            name: f"rule {outcome.set_by[name]}"
            if name in outcome.set_by
            else ctx.fields_from.get(name, default)
            for name in ctx.fields.as_json()
        }
        ctx.decide(stage, "case fields", **ctx.fields.as_json(), set_by=set_by)
        if outcome.disposition == "quarantine" and ctx.envelope.release:
            ctx.decide(
                stage,
                "released by operator",
                rule=outcome.disposition_rule,
                reason=outcome.disposition_reason,
            )
        elif outcome.disposition:
            ctx.disposition = _DISPOSITIONS[outcome.disposition]
            ctx.disposition_reason = (
                f"rule {outcome.disposition_rule}: {outcome.disposition_reason}"
            )
            ctx.disposition_stage = stage
            ctx.decide(
                stage,
                ctx.disposition.value,
                rule=outcome.disposition_rule,
                reason=outcome.disposition_reason,
            )
        elif outcome.if_new_case:
            ctx.new_case_disposition = _DISPOSITIONS[outcome.if_new_case]
            ctx.new_case_reason = f"rule {outcome.if_new_case_rule}: {outcome.if_new_case_reason}"
            ctx.decide(
                stage,
                f"if new case: {ctx.new_case_disposition.value}",
                rule=outcome.if_new_case_rule,
                reason=outcome.if_new_case_reason,
                note="a message that threads onto an existing case is appended as usual",
            )
