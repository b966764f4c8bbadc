"""``/quarantine``, ``/addresses``, ``/status`` and the unauthenticated ``/health``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from emaild import quarantine
from emaild.errors import InputError
from emaild.http.auth import ADMIN, READ, Principal
from emaild.http.context import ApiContext, api
from emaild.http.problems import Problem, documented

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(api)]


@router.get("/health", tags=["status"])
async def health() -> dict[str, str]:
    """Liveness: the API answers (no token needed)."""
    return {"status": "ok"}


@router.get("/status", tags=["status"], responses=documented(401, 403))
async def status(ctx: Ctx, _: Principal = READ) -> dict[str, Any]:
    """What ``emaild status --json`` shows."""
    from emaild.status import gather_status

    return await ctx.run_sync(gather_status, ctx.app)


@router.get("/addresses", tags=["addresses"], responses=documented(401, 403))
async def addresses(ctx: Ctx, _: Principal = READ) -> dict[str, Any]:
    """Routing addresses, their verification state and held mail."""
    from emaild.verification.admin import list_addresses

    return {"items": await ctx.run_sync(list_addresses, ctx.app)}


@router.get("/quarantine", tags=["quarantine"], responses=documented(401, 403, 422))
async def quarantine_list(
    ctx: Ctx,
    _: Principal = READ,
    status: str | None = Query("held", pattern="^(held|released|discarded|all)$"),
) -> dict[str, Any]:
    """Messages that could not be processed, with the error."""
    wanted = None if status == "all" else status
    return {"items": await ctx.run_sync(quarantine.list_entries, ctx.app.db, wanted)}


@router.post(
    "/quarantine/{entry}/retry",
    tags=["quarantine"],
    responses=documented(401, 403, 404, 409, 422),
)
async def quarantine_retry(
    entry: Annotated[int, Path(ge=1, le=2**31 - 1)],
    ctx: Ctx,
    _: Principal = ADMIN,
    release: bool = False,
) -> dict[str, Any]:
    """Run a held message through the pipeline again (``release``: past a policy hold)."""
    if await ctx.run_sync(quarantine.get_entry, ctx.app.db, entry) is None:
        raise Problem(404, f"no quarantine entry {entry}")
    try:
        result = await ctx.run_sync(quarantine.retry, ctx.app.pipeline, entry, release=release)
    except InputError as exc:
        raise Problem(409, str(exc)) from exc
    return {
        "outcome": result.outcome.value,
        "case": result.case_number,
        "message": result.message_row_id,
        "detail": result.detail,
    }
