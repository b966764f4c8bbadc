"""``classify``: is this machine mail (auto-submitted, bulk, bounce, report, vacation)?"""

from __future__ import annotations

from emaild.classify import classify
from emaild.intake import LIVE_CHANNELS, Envelope
from emaild.pipeline.context import IngestContext


def envelope_sender(envelope: Envelope) -> str | None:
    """The envelope sender as ``classify`` takes it: "" is the null sender, None unknown.

    SMTP and LMTP always know it; the pipe knows it when the MTA passed
    ``--from`` (``<>`` for a bounce); elsewhere the ``Return-Path`` header decides.
    """
    sender = envelope.mail_from.strip()
    if sender == "<>":
        return ""
    if envelope.channel in LIVE_CHANNELS:
        return sender
    return sender or None


class ClassifyStage:
    name = "classify"
    description = "flag auto-submitted, bulk, bounce, report, vacation and reply mail"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        assert ctx.parsed is not None
        ctx.classification = classify(ctx.parsed, envelope_sender(ctx.envelope))
        ctx.decide(self.name, "classified", flags=list(ctx.classification.reasons))
