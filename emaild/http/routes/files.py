"""Raw messages and attachments, always as downloads.

Customer content must never run in a browser that opens it: every file goes
out as ``Content-Disposition: attachment`` with ``nosniff`` and a CSP that
sandboxes it, whatever its declared type.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path
from fastapi.responses import StreamingResponse

from emaild.http.auth import READ, Principal
from emaild.http.context import ApiContext, api
from emaild.http.problems import Problem, documented
from emaild.store.blobs import CHUNK
from emaild.store.models import Attachment, Message

router = APIRouter(tags=["files"])
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Ctx = Annotated[ApiContext, Depends(api)]
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private, no-store",
}


def _download_doc(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {media_type: {}}, "description": "the file, as a download"}}


def _disposition(filename: str) -> str:
    ascii_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:100]
    encoded = quote(filename[:200])
    return f"attachment; filename=\"{ascii_name or 'download'}\"; filename*=UTF-8''{encoded}"


def _pieces(reader: BinaryIO) -> Iterator[bytes]:
    """The blob in CHUNK pieces (Starlette reads a sync iterator in its thread pool)."""
    with reader:
        while piece := reader.read(CHUNK):
            yield piece


def _download(ctx: ApiContext, sha256: str, filename: str, media_type: str) -> StreamingResponse:
    """Stream the blob from whichever store holds it: never whole in memory."""
    size = ctx.app.blobs.size(sha256) if sha256 else None
    if size is None:
        raise Problem(404, "the stored file is missing")
    try:
        reader = ctx.app.blobs.open(sha256)
    except FileNotFoundError:
        raise Problem(404, "the stored file is missing") from None
    headers = {
        **SAFE_HEADERS,
        "Content-Disposition": _disposition(filename),
        "Content-Length": str(size),
    }
    return StreamingResponse(_pieces(reader), media_type=media_type, headers=headers)


@router.get(
    "/messages/{message}/raw",
    response_class=StreamingResponse,
    responses={**_download_doc("message/rfc822"), **documented(401, 403, 404, 422)},
)
async def raw_message(message: RowId, ctx: Ctx, _: Principal = READ) -> StreamingResponse:
    """The message exactly as stored (.eml)."""

    def find() -> str:
        with ctx.app.db.session(readonly=True) as session:
            row = session.get(Message, message)
            if row is None:
                raise Problem(404, f"no message {message}")
            return row.raw_sha256

    sha = await ctx.run_sync(find)
    return await ctx.run_sync(_download, ctx, sha, f"message-{message}.eml", "message/rfc822")


@router.get(
    "/attachments/{attachment}",
    response_class=StreamingResponse,
    responses={**_download_doc("application/octet-stream"), **documented(401, 403, 404, 422)},
)
async def attachment_file(attachment: RowId, ctx: Ctx, _: Principal = READ) -> StreamingResponse:
    """An attachment's bytes, as a download (never rendered)."""

    def find() -> tuple[str, str]:
        with ctx.app.db.session(readonly=True) as session:
            row = session.get(Attachment, attachment)
            if row is None:
                raise Problem(404, f"no attachment {attachment}")
            return row.sha256, row.filename

    sha, name = await ctx.run_sync(find)
    # Served as opaque bytes: the declared type is the sender's claim, not ours to trust.
    return await ctx.run_sync(
        _download, ctx, sha, name or f"attachment-{attachment}", "application/octet-stream"
    )
