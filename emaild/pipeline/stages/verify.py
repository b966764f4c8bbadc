"""``verify``: control mail, hold and release.

Runs inside the message's transaction, before deduplication:

1. A message carrying one of our tokens (header, subject or body, so it
   survives forwarders that drop unknown headers and admins who reply) is a
   control message. A valid ``verify`` token verifies its address; a valid
   ``fwdtest`` token records the forwarding test's arrival. Either way the
   message is stored without a case (``dropped``, with the reason in its
   trace): verification mail never becomes a case, nor does a late or
   repeated copy of it. A token we never issued (forged, mistyped) does
   nothing and the message goes on as ordinary mail.
2. Mail for a managed address that is not verified yet is held: stored,
   no case, no auto-response.
3. Mail for a verified address whose copy is held (the release pass running
   it again, or the same mail arriving anew) releases that copy: the held
   row gives way, in this same transaction, to the message as processed now,
   keeping its original arrival time.

Once a verification is committed, the pipeline releases the address's held
mail (``ctx.verified_addresses``); the stage never calls back into it.
"""

from __future__ import annotations

from functools import partial

import structlog
from sqlalchemy import update

from emaild.mime.parse import ParsedMessage
from emaild.pipeline.context import IngestContext, Outcome
from emaild.store.models import Message, QuarantineEntry, VerificationToken
from emaild.store.rows import stored_with_key
from emaild.verification.state import mark_verified, verified_in_session
from emaild.verification.tokens import (
    FORWARDING,
    TEST_HEADER,
    VERIFY,
    VERIFY_HEADER,
    TokenCheck,
    find_tokens,
    may_carry_token,
    use,
)

log = structlog.get_logger("emaild.verification")

# A hostile message could carry thousands of token-shaped strings; look at a few.
MAX_TOKENS = 5


def token_sources(parsed: ParsedMessage) -> list[str]:
    """Where a token may be: our headers first, then subject and bodies."""
    return [
        *parsed.header_all(VERIFY_HEADER),
        *parsed.header_all(TEST_HEADER),
        parsed.subject,
        parsed.text,
        parsed.html,
    ]


class VerifyStage:
    name = "verify"
    description = (
        "mail carrying a verification or forwarding-test token is recorded, never a case;"
        " mail for an unverified address is held; a held copy is released once verified"
    )
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        """Record control mail, hold mail for unverified addresses, release held copies."""
        stage = self.name
        assert ctx.parsed is not None and ctx.session is not None and ctx.routing is not None
        sources = token_sources(ctx.parsed)
        # Nearly all mail carries no token: a substring test rules it out cheaply.
        if any(may_carry_token(text) for text in sources if text):
            tokens = find_tokens(sources)
            if tokens and _control_message(ctx, stage, tokens[:MAX_TOKENS]):
                return
        address = ctx.routing.address
        if verified_in_session(ctx.session, ctx.services.addresses, address):
            _release_held_copy(ctx, stage)
        elif ctx.disposition is not None:
            return  # already kept without a case: a rule or accept_from decided
        elif ctx.config.verification.hold_unverified:
            ctx.disposition = Outcome.HELD
            ctx.disposition_reason = f"routing address {address} is not verified yet"
            ctx.decide(stage, "held", address=address, reason="address not verified")
        else:
            ctx.decide(stage, "not held", address=address, reason="hold_unverified is false")


# --- 1. control messages --------------------------------------------------------------
def _control_message(ctx: IngestContext, stage: str, tokens: list[str]) -> bool:
    assert ctx.session is not None
    signer = ctx.services.tokens
    genuine: list[TokenCheck] = []
    for token in tokens:
        check = use(ctx.session, signer, token, now=ctx.now, via=ctx.envelope.channel)
        ctx.decide(
            stage,
            "token",
            purpose=check.purpose,
            address=check.address,
            verdict=check.verdict.value,
        )
        if check.genuine:
            genuine.append(check)
        if not check.ok:
            continue
        ctx.before_commit.append(partial(_link_token, token_id=check.token_id))
        if check.purpose == VERIFY and mark_verified(ctx.session, check.address, ctx.now):
            ctx.decide(stage, "address verified", address=check.address, via=ctx.envelope.channel)
            ctx.verified_addresses.append(check.address)
    if not genuine:
        return False
    first = genuine[0]
    kind = "verification message" if first.purpose == VERIFY else "forwarding test message"
    ctx.disposition = Outcome.DROPPED
    ctx.disposition_reason = f"{kind} for {first.address} ({first.verdict.value}); never a case"
    ctx.decide(stage, "control message", kind=kind, address=first.address)
    if first.purpose == FORWARDING:
        log.info(
            "verification.forwarding_arrived", address=first.address, channel=ctx.envelope.channel
        )
    return True


def _link_token(ctx: IngestContext, *, token_id: int | None) -> None:
    """Point the used token at the stored message, so the path can be reported."""
    assert ctx.session is not None
    if ctx.message is None or token_id is None:
        return
    ctx.session.flush()
    ctx.session.execute(
        update(VerificationToken)
        .where(VerificationToken.id == token_id)
        .values(message_row_id=ctx.message.id)
        .execution_options(synchronize_session=False)
    )


# --- 3. releasing a held copy ----------------------------------------------------------
def _release_held_copy(ctx: IngestContext, stage: str) -> None:
    assert ctx.parsed is not None and ctx.session is not None
    key = ctx.parsed.dedup_key
    stored = stored_with_key(ctx.session, key)
    # The deduplicate stage needs the same lookup: it reads this one.
    ctx.stored_row, ctx.stored_row_known = stored, True
    if stored is None or stored[1] != "held":
        return
    held = ctx.session.get(Message, stored[0])
    if held is None:
        return
    ctx.stored_row = None  # the key is freed for this message below
    # Free the dedup key for the message as processed now; the held row is
    # deleted at commit time once its successor exists (same transaction).
    held.dedup_key = f"releasing:{held.id}"
    ctx.session.flush()
    ctx.decide(
        stage,
        "released from hold",
        held_row=held.id,
        held_since=held.received_at.isoformat(),
    )
    ctx.before_commit.append(partial(_finish_release, held=held, key=key))


def _finish_release(ctx: IngestContext, *, held: Message, key: str) -> None:
    assert ctx.session is not None
    session, successor = ctx.session, ctx.message
    if successor is None or successor is held:
        held.dedup_key = key  # nothing replaced it (e.g. rejected): keep it held
        return
    session.flush()
    successor.received_at = held.received_at
    # Quarantine entries that ran into the hold now point at the released message.
    session.execute(
        update(QuarantineEntry)
        .where(QuarantineEntry.message_row_id == held.id)
        .values(message_row_id=successor.id)
        .execution_options(synchronize_session=False)
    )
    session.delete(held)
    session.flush()
