"""Reading a web form's body: streamed, bounded, and never held whole when too large.

Multipart uploads are spooled by Starlette (python-multipart) to temporary
files (in memory up to 1 MiB each, then on disk); the request stream is
counted as it arrives and a body over the form's limit is answered 413 at
that point. Each file is then checked against the attachment limit before it
is read.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message, Receive

from emaild.config import WebformConfig
from emaild.config_base import MiB
from emaild.webform.submission import Refused, Upload, upload

# A form's whole body, however large, arrives within this.
READ_TIMEOUT_SECONDS = 60
MAX_JSON_BYTES = MiB
FIELD_SLACK = 256 * 1024


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Body:
    values: dict[str, str]
    uploads: list[Upload]


def attachment_limit(form: WebformConfig, global_limit: int) -> int:
    return min(form.max_attachment_bytes or global_limit, global_limit)


def body_limit(form: WebformConfig, global_limit: int, message_limit: int) -> int:
    files = form.max_attachments * attachment_limit(form, global_limit) if form.attachments else 0
    return min(files + 4 * form.max_description_chars + FIELD_SLACK, message_limit)


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return counted


async def read_body(
    request: Request, form: WebformConfig, *, global_attachment: int, message_limit: int
) -> Body:
    """The posted values and files, or ``Refused`` (400, 408, 413, 415).

    The whole body must arrive within ``READ_TIMEOUT_SECONDS``: a client trickling
    it in would otherwise hold one of the listener's connections for ever.
    """
    try:
        async with asyncio.timeout(READ_TIMEOUT_SECONDS):
            return await _read_body(
                request, form, global_attachment=global_attachment, message_limit=message_limit
            )
    except TimeoutError:
        raise Refused(
            408, f"the form did not arrive within {READ_TIMEOUT_SECONDS} s", "slow"
        ) from None


async def _read_body(
    request: Request, form: WebformConfig, *, global_attachment: int, message_limit: int
) -> Body:
    limit = body_limit(form, global_attachment, message_limit)
    declared = request.headers.get("content-length", "")
    if declared and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"the request is over {limit} bytes", "size")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":  # never more than a JSON body may be, held in memory
        limit = min(limit, MAX_JSON_BYTES)
    limited = Request(request.scope, _limited(request.receive, limit))
    if kind == "application/json":
        return await _json(limited, min(limit, MAX_JSON_BYTES))
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise Refused(415, "send the form as multipart/form-data, urlencoded or JSON")
    per_file = attachment_limit(form, global_attachment)
    try:
        data = await limited.form(
            max_files=form.max_attachments if form.attachments else 0,
            max_fields=100,
            max_part_size=4 * form.max_description_chars + 1024,
        )
    except BodyTooLarge:
        raise Refused(413, f"the request is over {limit} bytes", "size") from None
    except (MultiPartException, HTTPException) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", "") or str(exc)
        raise Refused(400, f"the form data is malformed: {detail}", "malformed") from None
    try:
        values: dict[str, str] = {}
        uploads: list[Upload] = []
        for key, value in data.multi_items():
            if isinstance(value, UploadFile):
                if not value.filename and not value.size:
                    continue  # an empty file input
                if value.size is None or value.size > per_file:
                    raise Refused(
                        413,
                        f"{value.filename}: attachments may be at most {per_file} bytes",
                        "size",
                    )
                uploads.append(upload(value.filename, value.content_type, await value.read()))
            elif key not in values:
                values[key] = value
        return Body(values, uploads)
    finally:
        await data.close()


async def _json(request: Request, limit: int) -> Body:
    try:
        raw = await request.body()
    except BodyTooLarge:
        raise Refused(413, f"the request is over {limit} bytes", "size") from None
    if len(raw) > limit:
        raise Refused(413, f"the request is over {limit} bytes", "size")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON", "malformed") from None
    if not isinstance(data, dict):
        raise Refused(400, "the body must be a JSON object", "malformed")
    values: dict[str, str] = {}
    fields = data.get("fields")
    extra: dict[str, object] = fields if isinstance(fields, dict) else {}
    for key, value in [*data.items(), *extra.items()]:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            values.setdefault(str(key), str(value))
    return Body(values, [])
