"""``deduplicate``: a message already stored is not stored again (contract 2)."""

from __future__ import annotations

from emaild.pipeline.context import IngestContext, Outcome
from emaild.store.models import Message
from emaild.store.rows import stored_with_key


class DeduplicateStage:
    name = "deduplicate"
    description = "a message already stored (same Message-ID, or same bytes) is not stored again"
    needs_session = True

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None and ctx.session is not None
        key = ctx.parsed.dedup_key
        # verify looked the key up already for most mail: one query, not two.
        stored = ctx.stored_row if ctx.stored_row_known else stored_with_key(ctx.session, key)
        existing = ctx.session.get(Message, stored[0]) if stored is not None else None
        if existing is None:
            return
        ctx.message = existing
        ctx.case = existing.case
        ctx.decide(self.name, "duplicate", key=key, message_row=existing.id, case=existing.case_id)
        ctx.duplicate = True
        ctx.stop(Outcome.DUPLICATE)
