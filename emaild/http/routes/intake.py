"""``POST /cases``: another system opens a case; it goes through the one pipeline.

The request becomes a mail message (channel ``api``) and takes the same road
as mail: routing, rules, threading, storage, auto-response. With an
``Idempotency-Key`` the Message-ID is derived from the token and the key, so a
repeat is the same message and deduplication (contract 2) keeps it to one case.
"""

from __future__ import annotations

import hashlib
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse

from emaild.autoresponse.compose import usable_address
from emaild.http.auth import WRITE, Principal
from emaild.http.context import ApiContext, api
from emaild.http.problems import Problem, documented
from emaild.http.schemas import NewCaseIn, NewCaseOut
from emaild.intake import Envelope, IngestResult, Outcome
from emaild.outbox.queue import WIRE_POLICY
from emaild.text import one_line

router = APIRouter(tags=["cases"])


def _message(body: NewCaseIn, to: str, message_id: str, ctx: ApiContext) -> bytes:
    msg = EmailMessage()
    msg["From"] = Address(display_name=one_line(body.from_name, 300), addr_spec=body.from_address)
    msg["To"] = to
    msg["Subject"] = one_line(body.subject, 900)
    msg["Date"] = format_datetime(ctx.now())
    msg["Message-ID"] = message_id
    msg.set_content(body.text)
    return msg.as_bytes(policy=WIRE_POLICY)


@router.post(
    "/cases", status_code=201, response_model=NewCaseOut, responses=documented(401, 403, 422)
)
async def open_case(
    body: NewCaseIn,
    ctx: Annotated[ApiContext, Depends(api)],
    who: Principal = WRITE,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> JSONResponse:
    """Open a case (201), or append to the one it threads onto (200)."""
    sender = body.from_address.strip().lower()
    if not usable_address(sender):
        raise Problem(422, "from_address: not a usable address")
    book = ctx.app.services.addresses
    to = body.to.strip().lower() or book.default().address
    if book.lookup(to) is None:
        raise Problem(422, f"to: {to} is not a routing address")
    domain = ctx.app.services.signer.domain
    if idempotency_key is not None:
        digest = hashlib.sha256(f"{who.name}\0{idempotency_key}".encode()).hexdigest()[:40]
        message_id = f"<api.{digest}@{domain}>"
    else:
        message_id = make_msgid("api", domain)
    raw = _message(body.model_copy(update={"from_address": sender}), to, message_id, ctx)
    envelope = Envelope(channel="api", mail_from=sender, rcpt_to=(to,), routing_hint=to)
    result: IngestResult = await ctx.run_sync(ctx.app.pipeline.ingest, raw, envelope)
    status = {Outcome.NEW_CASE: 201, Outcome.DUPLICATE: 200, Outcome.APPENDED: 200}.get(
        result.outcome, 202
    )
    if result.outcome is Outcome.REJECTED:
        raise Problem(422, result.detail or "refused")
    data: dict[str, Any] = {
        "outcome": result.outcome.value,
        "number": result.case_number,
        "message": result.message_row_id,
        "message_id": message_id,
    }
    headers = {"Idempotent-Replayed": "true"} if result.outcome is Outcome.DUPLICATE else {}
    return JSONResponse(data, status_code=status, headers=headers)
