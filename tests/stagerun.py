"""Run the pipeline's stages one by one on a real message and a real database.

``run_until(app, raw, "route")`` runs every stage up to and including the
named one, the session stages inside one transaction (committed, as the
pipeline would), and returns the context: a stage's test looks at exactly
what that stage decided, with the stages before it having done their part.
"""

from __future__ import annotations

from typing import Any

from emaild.app import App
from emaild.intake import Envelope
from emaild.pipeline.context import IngestContext
from emaild.pipeline.stages import STAGES


def new_context(app: App, raw: bytes, envelope: Envelope) -> IngestContext:
    sha, _ = app.blobs.put(raw)
    services = app.services
    return IngestContext(
        raw=raw, raw_sha256=sha, envelope=envelope, services=services, now=services.clock()
    )


def run_until(app: App, raw: bytes, last: str, envelope: Envelope | None = None) -> IngestContext:
    """Run ``STAGES`` up to ``last``; stop early where a stage stops the message."""
    names = [s.name for s in STAGES]
    stages = STAGES[: names.index(last) + 1]
    ctx = new_context(app, raw, envelope or Envelope(channel="test"))
    session_stages = [s for s in stages if s.needs_session]
    for stage in stages:
        if stage.needs_session:
            break
        stage(ctx)
        if ctx.stopped:
            return ctx
    if session_stages:

        def work(session: Any) -> None:
            ctx.session = session
            for stage in session_stages:
                stage(ctx)
                if ctx.stopped:
                    break
            session.flush()

        app.db.transact(work)
        ctx.session = None
    return ctx
