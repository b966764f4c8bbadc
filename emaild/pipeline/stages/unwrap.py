"""``unwrap``: a customer's message forwarded by an agent opens the case in the customer's name.

When a configured internal sender (``[threading] internal_senders``) forwards a
message to a support address (inline "Forwarded message" block or attached
``message/rfc822``), the case's customer is the original sender and the
forwarder is recorded (trace, and a ``forwarder`` participant). The forward
is believed only from an authenticated internal sender, unless the routing
address records authentication without acting on it (``auth_policy =
"record"``): otherwise a forged ``From: agent@...`` could open cases in
anyone's name. The auto-response is off for a forward (it would answer the
agent); a rule that sets ``auto_response`` (e.g. on ``forwarded_by``) sends
it to the original sender.
"""

from __future__ import annotations

from emaild.mime.forwarded import find_original
from emaild.pipeline.context import IngestContext

NAME = "unwrap"


def is_internal(address: str, internal: list[str]) -> bool:
    """Whether ``address`` is one of ``internal`` (addresses, or ``@domain``)."""
    domain = "@" + address.rpartition("@")[2]
    return bool(address) and any(address == i or domain == i for i in internal)


def case_customer(ctx: IngestContext) -> tuple[str, str]:
    """``(address, name)`` of the customer of a new case opened by this message."""
    assert ctx.parsed is not None
    if ctx.forwarded is not None:
        return ctx.forwarded.addr, ctx.forwarded.name
    customer = ctx.parsed.reply_to or ctx.parsed.from_
    return ctx.parsed.customer_addr, customer.name if customer else ""


class UnwrapStage:
    name = NAME
    description = "find the original sender of a message an agent forwarded"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.routing is not None
        p, internal = ctx.parsed, ctx.config.threading.internal_senders
        sender = p.from_addr
        if not internal or not is_internal(sender, internal):
            return
        trusted = ctx.routing.auth_policy == "record" or (
            ctx.auth is not None and ctx.auth.authenticated
        )
        original = find_original(p.text, ctx.raw)
        if original is None or original.addr == sender:
            ctx.decide(self.name, "not a forward", sender=sender, reason="no original sender")
            return
        if not trusted:
            ctx.decide(
                self.name,
                "forward ignored",
                forwarder=sender,
                original=original.addr,
                reason=f"the internal sender is not authenticated ({ctx.auth and ctx.auth.why})",
            )
            return
        if original.addr in ctx.services.addresses.own_addresses():
            ctx.decide(self.name, "forward ignored", reason=f"{original.addr} is our own address")
            return
        ctx.forwarded, ctx.forwarder = original, sender
        ctx.verdicts = {**ctx.verdicts, "forwarded_by": sender}
        # The template chosen so far would answer the agent; only a rule brings it back.
        ctx.fields.auto_response = ""
        ctx.decide(
            self.name,
            "forwarded",
            customer=original.addr,
            customer_name=original.name,
            forwarder=sender,
            how=original.how,
        )
