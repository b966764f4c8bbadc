"""``/reports``: what ``emaild report --json`` prints (read tokens)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from emaild.http.auth import READ, Principal
from emaild.http.context import ApiContext, api
from emaild.http.problems import documented

router = APIRouter(tags=["reports"])
Ctx = Annotated[ApiContext, Depends(api)]
By = Literal["origin", "priority", "category", "address", "owner", "day", "week"]
When = Annotated[str | None, Query(max_length=40, description="ISO date or date-time (UTC)")]


def _report(ctx: ApiContext, since: str | None, until: str | None, by: str | None) -> Any:
    from emaild.reports.report import build_report, period

    start, end = period(since, until, ctx.now())
    with ctx.app.db.session(readonly=True) as session:
        return build_report(session, start, end, by)


@router.get("/reports/summary", responses=documented(401, 403, 422))
async def report_summary(
    ctx: Ctx, _: Principal = READ, since: When = None, until: When = None, by: By | None = None
) -> dict[str, Any]:
    """Cases opened and closed, response and resolution times, reopen rate, machine
    counts, ``by_origin``, the ``by`` breakdown and the topics (with spikes)."""
    data: dict[str, Any] = await ctx.run_sync(_report, ctx, since, until, by)
    return data


@router.get("/reports/topics", responses=documented(401, 403, 422))
async def report_topics(
    ctx: Ctx, _: Principal = READ, since: When = None, until: When = None
) -> dict[str, Any]:
    """Only the topics view of the period."""
    data = await ctx.run_sync(_report, ctx, since, until, None)
    return {"since": data["since"], "until": data["until"], "topics": data["topics"]}
