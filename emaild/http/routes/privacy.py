"""``/privacy``: erase or export one person's data (admin tokens only).

The address goes in a POST body, never in the URL: URLs end up in access logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import Field

from emaild.http.auth import ADMIN, Principal
from emaild.http.context import ApiContext, api
from emaild.http.problems import documented
from emaild.http.schemas import Strict

router = APIRouter(tags=["privacy"])
Ctx = Annotated[ApiContext, Depends(api)]


class ContactIn(Strict):
    contact: str = Field(min_length=3, max_length=320, description="the person's email address")


@router.post("/privacy/erase", responses=documented(401, 403, 422))
async def erase_contact(body: ContactIn, ctx: Ctx, who: Principal = ADMIN) -> dict[str, Any]:
    """Remove the person's messages, attachments only they sent, participant rows and
    every other copy of the address; their cases get a ``contact.erased`` event."""
    from emaild.privacy.erase import erase

    app = ctx.app
    report = await ctx.run_sync(
        erase,
        app.db,
        app.blobs,
        body.contact,
        actor=who.name,
        now=ctx.now(),
        own_addresses=app.services.addresses.own_addresses(),
    )
    return report.as_json()


def _collect(ctx: ApiContext, contact: str) -> dict[str, Any]:
    from emaild.privacy.export import collect

    with ctx.app.db.session(readonly=True) as session:
        return collect(session, contact, ctx.now())


@router.post("/privacy/export", responses=documented(401, 403, 422))
async def export_json(body: ContactIn, ctx: Ctx, _: Principal = ADMIN) -> dict[str, Any]:
    """The person's cases, messages and quarantine entries (the JSON of ``emaild export``)."""
    return await ctx.run_sync(_collect, ctx, body.contact)


@router.post(
    "/privacy/export/mbox",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/mbox": {}}, "description": "mboxrd, as a download"},
        **documented(401, 403, 422),
    },
)
async def export_mbox(body: ContactIn, ctx: Ctx, _: Principal = ADMIN) -> StreamingResponse:
    """The person's messages, byte for byte, as an mboxrd file."""
    from emaild.http.routes.files import SAFE_HEADERS
    from emaild.privacy.export import mbox_chunks

    data = await ctx.run_sync(_collect, ctx, body.contact)

    def chunks() -> Iterator[bytes]:  # a sync iterator: Starlette reads it in its thread pool
        yield from mbox_chunks(ctx.app.blobs, data)

    headers = {**SAFE_HEADERS, "Content-Disposition": 'attachment; filename="export.mbox"'}
    return StreamingResponse(chunks(), media_type="application/mbox", headers=headers)
