"""``autorespond``: decide whether a new case gets an auto-response, and queue it if so.

The stage runs inside the message's transaction: the outbox row is
written with the case, so a response is never lost and never sent for a
message that was not stored. Every reason not to respond is recorded on the
message's decision trace (contract 4: no loops, no backscatter).

The checks, in order (the first that applies is the recorded reason):

1. only a new case is answered, and only when auto-responses are on and a
   template was chosen (routing address default, or a rule);
2. the loop detector did not flag the message;
3. the message is not machine-generated (``classify``: auto-submitted, bulk,
   list, bounce, DSN, MDN, ARF, vacation, X-Auto-Response-Suppress, our loop
   header, null or no-reply sender);
4. sender and recipient are not our own routing addresses, and the recipient
   is a usable, non-machine address;
5. one of our addresses is named in To/Cc (RFC 3834 section 2; configurable);
6. the recipient is not suppressed (an earlier bounce or 5xx);
7. at most one auto-response per case, and at most ``per_recipient_limit``
   per recipient per ``per_recipient_window_minutes``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, func, select

from emaild.autoresponse.bounces import record_bounce
from emaild.autoresponse.compose import Reply, compose, smtp_address, usable_address
from emaild.autoresponse.templates import merge_fields
from emaild.cases import case_number
from emaild.classify import is_no_reply_address
from emaild.errors import ConfigError
from emaild.outbox.queue import enqueue, is_suppressed
from emaild.pipeline.context import IngestContext, Outcome
from emaild.store.models import OutboxItem
from emaild.store.rows import update_row

log = structlog.get_logger("emaild.autoresponse")

STAGE = "autorespond"
KIND = "autoresponse"
MAX_QUOTED_CHARS = 20000


# Asked for every new case: built once (building a statement costs more than running it).
_SENT_RECENTLY = select(func.count(OutboxItem.id)).where(
    OutboxItem.rcpt_to == bindparam("rcpt"),
    OutboxItem.kind == KIND,
    OutboxItem.created_at >= bindparam("since"),
)


class AutoRespondStage:
    name = STAGE
    description = "queue the auto-response in the outbox, unless loop protection says no"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        if ctx.session is None:
            return
        note_bounce(ctx)
        autorespond(ctx)


def note_bounce(ctx: IngestContext) -> None:
    """A bounce of our own mail marks its recipient undeliverable (trace says so)."""
    cls = ctx.classification
    if cls is None or not cls.is_bounce or ctx.session is None or ctx.parsed is None:
        return
    effect = record_bounce(
        ctx.session, ctx.raw, bounce_message_id=ctx.parsed.message_id, now=ctx.now
    )
    if effect.not_failures:
        ctx.decide(STAGE, "bounce is not a failure", actions=list(effect.not_failures))
    elif effect.suppressed:
        ctx.decide(
            STAGE,
            "recipient marked undeliverable",
            addresses=list(effect.suppressed),
            outbox=effect.outbox_id,
        )


def autorespond(ctx: IngestContext) -> OutboxItem | None:
    """Queue the auto-response for ``ctx``'s new case, or record why not."""
    reason = refusal(ctx)
    if reason:
        ctx.decide(STAGE, "no auto-response", reason=reason)
        return None
    assert ctx.case is not None and ctx.session is not None and ctx.routing is not None
    assert ctx.parsed is not None and ctx.message is not None
    templates = ctx.services.templates
    name = ctx.fields.auto_response
    template = templates.get(name)
    if template is None:
        ctx.decide(STAGE, "no auto-response", reason=f"no template named {name!r}")
        log.error("autoresponse.unknown_template", template=name, case=ctx.case.id)
        return None
    recipient, recipient_name = _recipient(ctx)
    recipient = smtp_address(recipient)
    signer = ctx.services.signer
    case = ctx.case
    hide = template.hide_record_information
    token = "" if hide else signer.subject_token(case.id)
    fields = _fields(ctx, token, recipient, recipient_name, hide)
    try:
        rendered = templates.render_template(template, fields)
    except ConfigError as exc:
        # A template that renders the sample but fails on real data: no blank mail.
        ctx.decide(STAGE, "no auto-response", reason=f"template error: {exc}")
        log.error("autoresponse.template_failed", template=name, case=case.id, error=str(exc))
        return None
    if not hide:
        # The case's tag in the subject (threading's format; replaces other cases' tags).
        rendered = replace(rendered, subject=signer.mark_subject(rendered.subject, case.id))
    message_id = signer.message_id(case.id, ctx.routing.address)
    raw = compose(
        rendered,
        from_name=ctx.routing.name,
        from_address=ctx.routing.address,
        reply=Reply(
            to_name=recipient_name,
            to_address=recipient,
            message_id=ctx.parsed.message_id,
            references=ctx.parsed.references,
        ),
        message_id=message_id,
        now=ctx.now,
        body_token="" if hide else signer.body_token(case.id),
    )
    item = enqueue(
        ctx.session,
        raw,
        # Bounces of the response come back to the support address, where they
        # are classified as bounces and mark the recipient undeliverable.
        mail_from=ctx.routing.address,
        rcpt_to=recipient,
        now=ctx.now,
        kind=KIND,
        case_id=case.id,
        in_reply_to_row=ctx.message.id,
    )
    update_row(ctx.session, case, auto_responses=(case.auto_responses or 0) + 1)
    ctx.decide(
        STAGE,
        "auto-response queued",
        template=name,
        to=recipient,
        outbox=item.id,
        message_id=message_id,
    )
    return item


def refusal(ctx: IngestContext) -> str:
    """Why ``ctx`` must not be answered, or "" if it may be."""
    settings = ctx.config.autoresponse
    if ctx.outcome is not Outcome.NEW_CASE or ctx.case is None:
        outcome = ctx.outcome.value if ctx.outcome else "no case"
        return f"not a new case ({outcome}): only new cases are answered"
    if not settings.enabled:
        return "auto-responses are off ([autoresponse] enabled = false)"
    if not ctx.fields.auto_response:
        return "no template chosen (auto_response is empty for this address or rule)"
    if ctx.loop:
        return ctx.loop
    if ctx.classification is not None:
        machine = ctx.classification.no_response_reason()
        if machine:
            return machine
    assert ctx.parsed is not None and ctx.session is not None
    recipient, _ = _recipient(ctx)
    if not recipient:
        return "no sender address to answer"
    own = ctx.services.addresses.own_addresses()
    for who, address in (
        ("sender", ctx.parsed.from_addr),
        ("envelope sender", ctx.envelope.mail_from.strip().lower()),
        ("recipient", recipient),
    ):
        if address and address in own:
            return f"{who} {address} is one of our own routing addresses"
    if is_no_reply_address(recipient):
        return f"recipient {recipient} is a machine address (no-reply, list or MTA)"
    if not usable_address(recipient):
        return f"recipient address {recipient!r} is not usable in a reply"
    if settings.require_explicit_recipient and not _addressed_to_us(ctx, own):
        return "none of our addresses is in To/Cc (Bcc, list or redirected copy; RFC 3834 §2)"
    for address in {recipient, ctx.parsed.from_addr} - {""}:
        why = is_suppressed(ctx.session, address)
        if why:
            return f"{address} is marked undeliverable: {why}"
    if (ctx.case.auto_responses or 0) >= 1:
        return "this case already got its auto-response"
    limit, window = settings.per_recipient_limit, settings.per_recipient_window_minutes
    since = ctx.now - timedelta(minutes=window)
    params = {"rcpt": recipient, "since": since}
    sent = int(ctx.session.connection().execute(_SENT_RECENTLY, params).scalar() or 0)
    if sent >= limit:
        return f"rate limit: {sent} auto-responses to {recipient} in the last {window} min"
    return ""


def _recipient(ctx: IngestContext) -> tuple[str, str]:
    """Who the response goes to: Reply-To, else From (as a reply would)."""
    assert ctx.parsed is not None
    if ctx.forwarded is not None:  # an agent's forward: its original sender, never the agent
        return ctx.forwarded.addr, ctx.forwarded.name
    who = ctx.parsed.reply_to or ctx.parsed.from_
    if who is None:
        return "", ""
    return who.addr.strip().lower(), who.name


def _addressed_to_us(ctx: IngestContext, own: set[str]) -> bool:
    assert ctx.parsed is not None
    named = {a.addr for a in ctx.parsed.to + ctx.parsed.cc}
    for header in ("resent-to", "resent-cc"):
        for value in ctx.parsed.header_all(header):
            named.update(part.strip(" <>").lower() for part in value.split(","))
    return bool(named & own)


def _fields(
    ctx: IngestContext, token: str, recipient: str, recipient_name: str, hide: bool
) -> dict[str, Any]:
    assert ctx.case is not None and ctx.parsed is not None and ctx.routing is not None
    case, p = ctx.case, ctx.parsed
    return merge_fields(
        case={
            "number": case_number(case.id),
            "id": case.id,
            "subject": case.subject,
            "priority": case.priority,
            "status": case.status,
            "origin": case.origin,
            "category": case.category,
            "token": token,
        },
        customer={"name": recipient_name or case.customer_name, "address": recipient},
        message={
            "subject": p.subject,
            "text": p.text[:MAX_QUOTED_CHARS],
            "date": format_datetime(p.date) if p.date else "",
            "sender_name": p.from_.name if p.from_ else "",
            "sender_address": p.from_addr,
        },
        routing={"name": ctx.routing.name, "address": ctx.routing.address},
        hide_record_information=hide,
    )
