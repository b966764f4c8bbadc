"""Pipeline glue: the accept-from policy and the rules, applied to an ``IngestContext``.

The stages in ``emaild.pipeline.stages`` call these. Every decision goes into
the decision trace, so ``emaild cases show`` explains a case's priority and
origin and ``emaild rules test`` shows the same thing without storing.
Only ``emaild.pipeline.stages`` imports this module (it needs the pipeline's
types at run time, and the pipeline needs it).
"""

from __future__ import annotations

from typing import Any

from emaild.pipeline.context import IngestContext, Outcome
from emaild.routing import sender_refusal
from emaild.rules.engine import RuleSet, RulesOutcome
from emaild.rules.facts import MessageFacts

# Channels where the sender is still connected: a refusal is an SMTP 5xx there.
# Anywhere else the mail is already accepted, and bouncing it would be backscatter.
LIVE_CHANNELS = ("smtp", "lmtp")
_DISPOSITIONS = {"quarantine": Outcome.QUARANTINED, "drop": Outcome.DROPPED}


def apply_accept_from(ctx: IngestContext, stage: str) -> None:
    """Refuse a sender outside the routing address's ``accept_from`` list.

    ``reject`` answers 5.7.1 on SMTP/LMTP (outcome ``rejected``, nothing
    stored); on other channels the message was already accepted, so it is kept
    raw with no case, like ``discard``, and the trace says why. ``quarantine``
    holds it for an operator.
    """
    assert ctx.parsed is not None and ctx.routing is not None
    sender = ctx.parsed.from_addr or ctx.envelope.mail_from
    refusal = sender_refusal(ctx.routing, sender)
    if refusal is None:
        if ctx.routing.accept_from:
            ctx.decide(stage, "sender accepted", sender=sender, accept_from=ctx.routing.accept_from)
        return
    action = ctx.routing.reject_action
    if action == "quarantine" and ctx.envelope.release:
        ctx.decide(stage, "released by operator", reason=refusal, action=action, sender=sender)
        return
    ctx.disposition_reason = refusal
    ctx.extra["disposition_stage"] = stage
    if action == "reject" and ctx.envelope.channel in LIVE_CHANNELS:
        ctx.decide(stage, "rejected", reason=refusal, action=action, reply="550 5.7.1")
        ctx.stop(Outcome.REJECTED)
        return
    if action == "quarantine":
        ctx.disposition = Outcome.QUARANTINED
    else:
        ctx.disposition = Outcome.DROPPED
    note = ""
    if action == "reject":
        note = f"already accepted over {ctx.envelope.channel}: kept without a case, no bounce"
    ctx.decide(
        stage, ctx.disposition.value, reason=refusal, action=action, note=note, sender=sender
    )


def facts_for(ctx: IngestContext) -> MessageFacts:
    """The rule-visible facts of the message in ``ctx``."""
    assert ctx.parsed is not None
    book = ctx.pipeline.addresses

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
    )


def apply_rules(ctx: IngestContext, rules: RuleSet | None, stage: str) -> RulesOutcome | None:
    """Evaluate ``rules`` on the message and record every decision on ``ctx``."""
    if ctx.disposition is not None:
        ctx.decide(
            stage, "skipped", reason=f"already {ctx.disposition.value} by the routing policy"
        )
        return None
    if rules is None:
        ctx.decide(stage, "no rules loaded")
        return None
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
        name: f"rule {outcome.set_by[name]}" if name in outcome.set_by else default
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
        ctx.disposition_reason = f"rule {outcome.disposition_rule}: {outcome.disposition_reason}"
        ctx.extra["disposition_stage"] = stage
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
    return outcome
