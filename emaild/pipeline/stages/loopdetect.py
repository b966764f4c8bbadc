"""``loopdetect``: a burst of identical messages becomes one case with a counter.

When a message would be the ``loop_threshold``-th or later with the same
fingerprint (sender, subject, body) inside ``loop_window_minutes``, it does
not open a case of its own: it is stored on the newest case of that burst,
whose ``loop_count`` goes up, and it gets no auto-response. A mail loop that
escaped every other check therefore costs at most ``loop_threshold - 1``
cases per window, however fast it spins.
"""

from __future__ import annotations

from datetime import timedelta

from emaild.correlation.loops import fingerprint, newest_case, recent_count
from emaild.pipeline.context import IngestContext
from emaild.store.models import Case


class LoopDetectStage:
    name = "loopdetect"
    description = "a burst of identical messages (sender, subject, body) joins one case"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        """Set ``ctx.loop`` (why; the auto-responder refuses with it) and maybe ``ctx.case``."""
        assert ctx.parsed is not None and ctx.session is not None
        fp = ctx.fingerprint = fingerprint(ctx.parsed)
        # new_case_disposition: set by rules that keep machine mail off new cases.
        if ctx.disposition is not None or (ctx.case is None and ctx.new_case_disposition):
            return  # held, dropped or kept off new cases by a rule: it opens no case anyway
        settings = ctx.config.autoresponse
        since = ctx.now - timedelta(minutes=settings.loop_window_minutes)
        seen = recent_count(ctx.session, fp, since)
        if seen + 1 < settings.loop_threshold:
            return
        target = ctx.case
        if target is None:
            newest = newest_case(ctx.session, fp, since)
            if newest is not None:
                target = ctx.session.get(Case, newest)
        reason = (
            f"loop: {seen + 1} messages with the same sender, subject and body "
            f"within {settings.loop_window_minutes} min (threshold {settings.loop_threshold})"
        )
        ctx.loop = reason
        if target is None:
            ctx.decide(self.name, "loop suspected", reason=reason, count=seen + 1)
            return
        if ctx.case is None:
            ctx.case = target
            ctx.decide(
                self.name, "loop: no new case", reason=reason, case=target.id, count=seen + 1
            )
        else:
            ctx.decide(self.name, "loop counted", reason=reason, case=target.id, count=seen + 1)
        # An SQL increment, so concurrent copies of the loop all count.
        target.loop_count = Case.loop_count + 1
