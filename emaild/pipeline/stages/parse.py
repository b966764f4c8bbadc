"""``parse``: raw bytes to a ``ParsedMessage``; attachments spooled to the blob store."""

from __future__ import annotations

from emaild.mime.parse import parse_message
from emaild.pipeline.context import IngestContext


class ParseStage:
    name = "parse"
    description = "decode headers, bodies and attachments; spool attachments to the blob store"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        limits = ctx.config.limits
        ctx.parsed = parse_message(
            ctx.raw,
            spool_threshold=limits.spool_part_bytes,
            # A dry run (``emaild rules test``) stores nothing: attachments are only hashed.
            sink=None if ctx.dry_run else ctx.services.blobs,
            raw_sha256=ctx.raw_sha256,
        )
        p = ctx.parsed
        ctx.decide(
            self.name,
            "parsed",
            message_id=p.message_id,
            subject=p.subject,
            attachments=len(p.attachments),
            defects=len(p.defects),
        )
        big = [a.filename for a in p.attachments if a.size > limits.max_attachment_bytes]
        if big:
            ctx.decide(
                self.name,
                "attachment over limit kept",
                files=big,
                limit=limits.max_attachment_bytes,
            )
