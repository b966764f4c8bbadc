"""``accept``: the routing address's "accept email from" list."""

from __future__ import annotations

from emaild.accept_from import sender_refusal
from emaild.intake import LIVE_CHANNELS
from emaild.pipeline.context import IngestContext, Outcome


class AcceptStage:
    """Refuse a sender outside the routing address's ``accept_from`` list.

    ``reject`` answers 5.7.1 on SMTP/LMTP (outcome ``rejected``, nothing
    stored); on other channels the message was already accepted, so it is kept
    raw with no case, like ``discard``, and the trace says why. ``quarantine``
    holds it for an operator.
    """

    name = "accept"
    description = "apply the routing address's accept_from list (reject, discard or quarantine)"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.routing is not None
        sender = ctx.parsed.from_addr or ctx.envelope.mail_from
        refusal = sender_refusal(ctx.routing, sender)
        if refusal is None:
            if ctx.routing.accept_from:
                ctx.decide(
                    self.name, "sender accepted", sender=sender, accept_from=ctx.routing.accept_from
                )
            return
        action = ctx.routing.reject_action
        if action == "quarantine" and ctx.envelope.release:
            ctx.decide(
                self.name, "released by operator", reason=refusal, action=action, sender=sender
            )
            return
        ctx.disposition_reason = refusal
        ctx.disposition_stage = self.name
        if action == "reject" and ctx.envelope.channel in LIVE_CHANNELS:
            ctx.decide(self.name, "rejected", reason=refusal, action=action, reply="550 5.7.1")
            ctx.stop(Outcome.REJECTED)
            return
        ctx.disposition = Outcome.QUARANTINED if action == "quarantine" else Outcome.DROPPED
        note = ""
        if action == "reject":
            note = f"already accepted over {ctx.envelope.channel}: kept without a case, no bounce"
        ctx.decide(
            self.name,
            ctx.disposition.value,
            reason=refusal,
            action=action,
            note=note,
            sender=sender,
        )
