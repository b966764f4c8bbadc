"""``/cases``: list, detail, change (ETag/If-Match), events, replies, notes, new cases."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from emaild.cases import case_detail, load_case
from emaild.casework import reply as replies
from emaild.casework.events import list_events
from emaild.casework.ops import CaseNotFound, add_note, update_case
from emaild.casework.query import CaseFilter, find_cases
from emaild.http import idempotency
from emaild.http.auth import READ, WRITE, Principal
from emaild.http.context import ApiContext, api
from emaild.http.problems import Problem, documented
from emaild.http.schemas import (
    CaseDetail,
    CasePage,
    CasePatch,
    EventPage,
    NoteIn,
    NoteOut,
    ReplyIn,
    ReplyOut,
    Status,
)
from emaild.store.models import Case, CaseParticipant

router = APIRouter(tags=["cases"])
Number = Annotated[int, Path(ge=1, le=2**31 - 1, description="the case number")]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
Ctx = Annotated[ApiContext, Depends(api)]


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` names; None for no header or ``*``."""
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit() or len(tag) > 12:
        raise Problem(412, "If-Match: not an ETag of this case")
    return int(tag)


@router.get("/cases", response_model=CasePage, responses=documented(401, 403, 422))
async def list_cases(
    ctx: Ctx,
    _: Principal = READ,
    status: Status | None = None,
    priority: str | None = Query(None, max_length=16),
    origin: str | None = Query(None, max_length=64),
    owner: str | None = Query(None, max_length=255),
    routing_address: str | None = Query(None, max_length=320),
    customer: str | None = Query(None, max_length=320),
    tag: str | None = Query(None, max_length=64),
    updated_since: datetime | None = None,
    q: str | None = Query(None, max_length=200, description="text in the subject"),
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    """Cases, newest first, one page at a time (follow ``next``)."""
    where = CaseFilter(
        status=status,
        priority=priority,
        origin=origin,
        owner=owner,
        routing_address=routing_address,
        customer=customer,
        tag=tag,
        updated_since=updated_since,
        q=q,
    )

    def read() -> dict[str, Any]:
        with ctx.app.db.session(readonly=True) as session:
            items, next_cursor = find_cases(session, where, limit=limit, cursor=cursor)
        return {"items": items, "next": next_cursor}

    return await ctx.run_sync(read)


def detail(session: Session, ctx: ApiContext, number: int) -> dict[str, Any]:
    """The case with messages (and delivery state), participants and links."""
    case = load_case(session, number)
    if case is None:
        raise CaseNotFound(f"no case {number}")
    data = case_detail(case, ctx.app.config)
    outbound = [m["message_id"] for m in data["messages"] if m["direction"] == "out"]
    delivery = replies.delivery_state(session, outbound)
    for m in data["messages"]:
        if m["direction"] == "out":
            m["delivery"] = delivery.get(m["message_id"], [])
    data["participants"] = [
        {"address": p.address, "role": p.role}
        for p in session.scalars(
            select(CaseParticipant)
            .where(CaseParticipant.case_id == number)
            .order_by(CaseParticipant.id)
        )
    ]
    data["links"] = {
        "linked_case": case.linked_case_id,
        "follow_ups": list(
            session.scalars(select(Case.id).where(Case.linked_case_id == number).order_by(Case.id))
        ),
    }
    return data


def _case_response(data: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"ETag": etag(int(data["version"]))})


@router.get("/cases/{number}", response_model=CaseDetail, responses=documented(401, 403, 404, 422))
async def get_case(number: Number, ctx: Ctx, _: Principal = READ) -> JSONResponse:
    """One case: messages (``direction`` in/out), participants, links, decision trace."""

    def read() -> dict[str, Any]:
        with ctx.app.db.session(readonly=True) as session:
            return detail(session, ctx, number)

    return _case_response(await ctx.run_sync(read))


@router.patch(
    "/cases/{number}",
    response_model=CaseDetail,
    responses=documented(401, 403, 404, 412, 422),
)
async def patch_case(
    number: Number,
    body: CasePatch,
    ctx: Ctx,
    who: Principal = WRITE,
    if_match: str | None = Header(None, alias="If-Match", max_length=64),
) -> JSONResponse:
    """Change status, priority, owner, category, tags. With ``If-Match``: 412 if stale."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    version = parse_if_match(if_match)
    now = ctx.now()

    def write(session: Session) -> dict[str, Any]:
        update_case(session, number, changes, actor=who.name, now=now, if_version=version)
        session.flush()
        return detail(session, ctx, number)

    return _case_response(await ctx.run_sync(ctx.app.db.transact, write))


@router.get(
    "/cases/{number}/events", response_model=EventPage, responses=documented(401, 403, 404, 422)
)
async def case_events(
    number: Number,
    ctx: Ctx,
    _: Principal = READ,
    after: int = Query(0, ge=0, le=2**63 - 1),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """The case's history, oldest first: who did what, when."""

    def read() -> dict[str, Any]:
        with ctx.app.db.session(readonly=True) as session:
            if session.get(Case, number) is None:
                raise CaseNotFound(f"no case {number}")
            return {"items": list_events(session, number, after=after, limit=limit)}

    return await ctx.run_sync(read)


async def _idempotent(
    request: Request, ctx: ApiContext, who: Principal, key: str | None, work: Any
) -> JSONResponse:
    digest = idempotency.request_hash(request.method, request.url.path, await request.body())
    (status, body), replayed = await ctx.run_sync(idempotency.run, ctx, who.name, key, digest, work)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return JSONResponse(body, status_code=status, headers=headers)


@router.post(
    "/cases/{number}/replies",
    status_code=202,
    response_model=ReplyOut,
    responses=documented(401, 403, 404, 413, 422),
)
async def post_reply(
    number: Number,
    body: ReplyIn,
    request: Request,
    ctx: Ctx,
    who: Principal = WRITE,
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    """Answer the customer: queued in the outbox, delivered with retry (202)."""
    try:
        files = [
            replies.Attachment(
                a.filename, a.content_type, base64.b64decode(a.content_base64, validate=True)
            )
            for a in body.attachments
        ]
    except (binascii.Error, ValueError) as exc:
        raise Problem(422, "attachments: content_base64 is not base64") from exc
    wanted = replies.ReplyRequest(
        text=body.text,
        html=body.html,
        to=body.to,
        cc=body.cc,
        subject=body.subject,
        attachments=files,
        close=body.close,
        template=body.template,
    )
    services = ctx.app.services
    now = ctx.now()

    def work(session: Session) -> tuple[int, dict[str, Any]]:
        case = session.get(Case, number)
        routing = services.addresses.lookup(case.routing_address) if case else None
        queued = replies.queue_reply(
            session,
            signer=services.signer,
            blobs=ctx.app.blobs,
            own_addresses=services.addresses.own_addresses(),
            from_name=routing.name if routing else "",
            number=number,
            request=wanted,
            actor=who.name,
            now=now,
            templates=services.templates,
        )
        return 202, {
            "case": number,
            "message": queued.message_row_id,
            "message_id": queued.message_id,
            "outbox": queued.outbox_ids,
            "recipients": queued.recipients,
        }

    return await _idempotent(request, ctx, who, idempotency_key, work)


@router.post(
    "/cases/{number}/notes",
    status_code=201,
    response_model=NoteOut,
    responses=documented(401, 403, 404, 422),
)
async def post_note(
    number: Number,
    body: NoteIn,
    request: Request,
    ctx: Ctx,
    who: Principal = WRITE,
    idempotency_key: IdemKey = None,
) -> JSONResponse:
    """An internal note: on the case's history, never mailed."""
    now = ctx.now()

    def work(session: Session) -> tuple[int, dict[str, Any]]:
        event = add_note(session, number, body.text, actor=who.name, now=now)
        return 201, {"case": number, "event": event}

    return await _idempotent(request, ctx, who, idempotency_key, work)
