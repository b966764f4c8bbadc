"""``/metrics``, ``/healthz`` and ``/readyz``: for scrapers and load balancers, no token.

``/healthz`` says the process answers; ``/readyz`` whether it can take mail
(``emaild.observe.readiness``), 200 or 503 with the reasons. ``/metrics``
answers clients in ``[metrics] allow_from`` without a token and anyone else
with a valid one (any scope), so a scraper elsewhere uses a read token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from emaild.http.auth import require
from emaild.http.context import ApiContext, api
from emaild.http.ops import allowed
from emaild.http.problems import Problem
from emaild.observe.exposition import CONTENT_TYPE, render

# Not part of the API's OpenAPI document: operations endpoints, for machines that
# speak their own conventions (Prometheus text, a status code).
router = APIRouter(tags=["operations"], include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(api)]
_READ = require("read")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (no token; no database access)."""
    return {"status": "alive"}


@router.get("/readyz")
async def readyz(ctx: Ctx) -> JSONResponse:
    """Readiness: database reachable, listeners up, no channel failing past its threshold."""
    assert ctx.ops is not None
    problems = await ctx.ops.readiness.problems()
    body: dict[str, Any] = {"status": "not ready" if problems else "ready", "problems": problems}
    return JSONResponse(body, status_code=503 if problems else 200)


@router.get("/metrics", response_class=Response)
async def metrics_text(request: Request, ctx: Ctx) -> Response:
    """Prometheus text exposition (README: Metrics, health and alerts)."""
    settings = ctx.app.config.metrics
    if not settings.enabled:
        raise Problem(404, "metrics are switched off ([metrics] enabled = false)")
    client = request.client.host if request.client is not None else None
    if not allowed(client, settings.allow_from):
        await _READ(request, ctx)  # 401/403 unless a valid token came along
    assert ctx.ops is not None
    body = await ctx.run_sync(render, ctx.ops.scrape)
    return Response(body, media_type=CONTENT_TYPE)
