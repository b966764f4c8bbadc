"""The loop detector: a burst of identical messages becomes one case with a counter.

Like the reference product's, it looks at sender, subject and body together
(``messages.fingerprint``). When a message would be the ``loop_threshold``-th
or later with the same fingerprint inside ``loop_window_minutes``, it does not
open a case of its own: it is stored on the newest case of that burst, whose
``loop_count`` goes up, and it gets no auto-response. A mail loop that escaped
every other check therefore costs at most ``loop_threshold - 1`` cases per
window, however fast it spins.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, select

from emaild.store.models import Case, Message

if TYPE_CHECKING:
    from emaild.mime.parse import ParsedMessage
    from emaild.pipeline.context import IngestContext

BODY_CHARS = 8192


# Asked for every message: built once (building a statement costs more than running it).
_COUNT = select(func.count(Message.id)).where(
    Message.fingerprint == bindparam("fp"),
    Message.direction == "in",
    Message.received_at >= bindparam("since"),
)


def fingerprint(parsed: ParsedMessage) -> str:
    """sha256 over sender, subject and the start of the body: "the same message again"."""
    material = "\x00".join((parsed.from_addr, parsed.subject, parsed.text[:BODY_CHARS]))
    return hashlib.sha256(material.encode("utf-8", "replace")).hexdigest()


def detect_loop(ctx: IngestContext) -> None:
    """Record a loop on ``ctx``: the case to append to, the counter, the reason.

    Sets ``ctx.extra["loop"]`` (why; the auto-responder refuses with it) and,
    when the message would otherwise open a new case, ``ctx.case``.
    """
    assert ctx.parsed is not None and ctx.session is not None
    stage = "loopdetect"
    fp = fingerprint(ctx.parsed)
    ctx.extra["fingerprint"] = fp
    # new_case_disposition: set by rules that keep machine mail off new cases.
    if ctx.disposition is not None or (ctx.case is None and ctx.new_case_disposition):
        return  # held, dropped or kept off new cases by a rule: it opens no case anyway
    settings = ctx.config.autoresponse
    since = ctx.now - timedelta(minutes=settings.loop_window_minutes)
    seen = int(ctx.session.connection().execute(_COUNT, {"fp": fp, "since": since}).scalar() or 0)
    if seen + 1 < settings.loop_threshold:
        return
    recent = (Message.fingerprint == fp, Message.direction == "in", Message.received_at >= since)
    newest = ctx.session.scalars(
        select(Message.case_id)
        .where(*recent, Message.case_id.is_not(None))
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(1)
    ).first()
    target = ctx.case
    if target is None and newest is not None:
        target = ctx.session.get(Case, newest)
    reason = (
        f"loop: {seen + 1} messages with the same sender, subject and body "
        f"within {settings.loop_window_minutes} min (threshold {settings.loop_threshold})"
    )
    ctx.extra["loop"] = reason
    if target is None:
        ctx.decide(stage, "loop suspected", reason=reason, count=seen + 1)
        return
    if ctx.case is None:
        ctx.case = target
        ctx.decide(stage, "loop: no new case", reason=reason, case=target.id, count=seen + 1)
    else:
        ctx.decide(stage, "loop counted", reason=reason, case=target.id, count=seen + 1)
    # An SQL increment, so concurrent copies of the loop all count.
    target.loop_count = Case.loop_count + 1
