"""``parse``: raw bytes to a ``ParsedMessage``; attachments spooled to the blob store."""

from __future__ import annotations

from emaild.mime.parse import parse_message
from emaild.mime.prescan import OverLimit, ParseLimits, over_limits
from emaild.pipeline.context import IngestContext


class ParseStage:
    name = "parse"
    description = "decode headers, bodies and attachments; spool attachments to the blob store"
    needs_session = False

    def __call__(self, ctx: IngestContext) -> None:
        limits = ctx.config.limits
        # Parse cost grows with these; over one, the message is kept raw in
        # quarantine (reason over_limit) rather than tying up a worker.
        too_costly = over_limits(
            ctx.raw,
            ParseLimits(
                max_header_fields=limits.max_header_fields,
                max_header_bytes=limits.max_header_bytes,
                max_recipients=limits.max_header_recipients,
                max_parts=limits.max_parts,
                max_depth=limits.max_part_depth,
            ),
        )
        if too_costly:
            raise OverLimit(too_costly)
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
        if p.truncated:
            # The raw message is stored byte-exact, and each whole part as an attachment.
            ctx.decide(self.name, "text body truncated", parts=p.truncated)
        big = [a.filename for a in p.attachments if a.size > limits.max_attachment_bytes]
        if big:
            ctx.decide(
                self.name,
                "attachment over limit kept",
                files=big,
                limit=limits.max_attachment_bytes,
            )
