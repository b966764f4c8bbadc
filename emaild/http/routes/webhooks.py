"""``/webhooks``: subscriptions and their deliveries (admin scope).

The same operations as ``emaild webhook`` (``emaild.webhooks.admin``). A
subscription added here may target a private, loopback or link-local address
only with ``webhooks.allow_private`` (SSRF: README, Webhooks).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import Field

from emaild.config_webhooks import EVENT_TYPES
from emaild.errors import InputError
from emaild.http.auth import ADMIN, Principal
from emaild.http.context import ApiContext, api
from emaild.http.problems import Problem, documented
from emaild.http.schemas import Strict
from emaild.webhooks import admin

router = APIRouter(tags=["webhooks"])
Ctx = Annotated[ApiContext, Depends(api)]
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class WebhookIn(Strict):
    """A new subscription: ``secret`` empty = generate one (returned once)."""

    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=list, max_length=len(EVENT_TYPES))
    addresses: list[str] = Field(default_factory=list, max_length=100)
    name: str = Field(default="", max_length=64)
    secret: str = Field(default="", max_length=255)


@router.get("/webhooks", responses=documented(401, 403))
async def list_webhooks(ctx: Ctx, _: Principal = ADMIN) -> dict[str, Any]:
    """Subscriptions (config and run-time) with health and delivery counts."""
    return {"items": await ctx.run_sync(admin.list_all, ctx.app.db)}


@router.post("/webhooks", status_code=201, responses=documented(401, 403, 409, 422))
async def add_webhook(body: WebhookIn, ctx: Ctx, _: Principal = ADMIN) -> dict[str, Any]:
    """Subscribe a URL; the answer carries the signing secret (shown once)."""
    app = ctx.app

    def work() -> dict[str, Any]:
        return admin.add(
            app.db,
            app.config,
            url=body.url,
            events=body.events,
            addresses=body.addresses,
            name=body.name,
            secret=body.secret,
        )

    try:
        return await ctx.run_sync(work)
    except InputError as exc:
        status = 409 if "exists" in str(exc) or "config wins" in str(exc) else 422
        raise Problem(status, str(exc)) from exc


@router.get("/webhooks/deliveries", responses=documented(401, 403, 422))
async def list_deliveries(
    ctx: Ctx,
    _: Principal = ADMIN,
    failed: bool = False,
    webhook: str = Query("", max_length=64),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """Deliveries, newest first (``failed``: given up or retrying after a failure)."""
    items = await ctx.run_sync(
        lambda: admin.deliveries(ctx.app.db, failed=failed, webhook=webhook, limit=limit)
    )
    return {"items": items}


@router.post("/webhooks/deliveries/{delivery}/replay", responses=documented(401, 403, 404, 422))
async def replay_delivery(
    delivery: Annotated[int, Path(ge=1, le=2**31 - 1)], ctx: Ctx, _: Principal = ADMIN
) -> dict[str, Any]:
    """Send a delivery again, with the same ``webhook-id``."""
    done = await ctx.run_sync(lambda: admin.replay(ctx.app.db, ids=[delivery]))
    if not done:
        raise Problem(404, f"no delivery {delivery} (or it is being sent now)")
    return {"replayed": done}


@router.delete("/webhooks/{name}", status_code=204, responses=documented(401, 403, 404, 409))
async def remove_webhook(name: Name, ctx: Ctx, _: Principal = ADMIN) -> Response:
    """Remove a run-time subscription and its deliveries (config ones: edit the file)."""
    try:
        await ctx.run_sync(admin.remove, ctx.app.db, name)
    except InputError as exc:
        raise Problem(404 if str(exc).startswith("no webhook") else 409, str(exc)) from exc
    return Response(status_code=204)


@router.post("/webhooks/{name}/enable", responses=documented(401, 403, 404))
async def enable_webhook(name: Name, ctx: Ctx, _: Principal = ADMIN) -> dict[str, Any]:
    """Enable a subscription again (after its receiver's 410 Gone)."""
    try:
        await ctx.run_sync(admin.set_enabled, ctx.app.db, name, True)
    except InputError as exc:
        raise Problem(404, str(exc)) from exc
    return {"name": name, "enabled": True}
