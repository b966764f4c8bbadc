"""``classify``: is this machine mail (auto-submitted, bulk, bounce, report, vacation)?"""

from __future__ import annotations

from emaild.classify import classify
from emaild.pipeline.context import IngestContext


class ClassifyStage:
    name = "classify"
    description = "flag auto-submitted, bulk, bounce, report, vacation and reply mail"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None
        mail_from = ctx.envelope.mail_from if ctx.envelope.channel in ("smtp", "lmtp") else None
        ctx.classification = classify(ctx.parsed, mail_from)
        ctx.decide(self.name, "classified", flags=list(ctx.classification.reasons))
