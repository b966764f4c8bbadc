"""The FastAPI application: routers under ``/api/v1``, problem details, body limit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emaild.app import App
from emaild.http import problems
from emaild.http.context import ApiContext, RunSync
from emaild.http.problems import problem_response

PREFIX = "/api/v1"


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed, before parsing."""

    def __init__(self, app: ASGIApp, emaild: App) -> None:
        self.app = app
        self.emaild = emaild

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Read per request: a reload (SIGHUP) changes it.
        limit = self.emaild.config.http.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await problem_response(413, f"the body is over {limit} bytes")(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await problem_response(413, f"the body is over {limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(app: App, run_sync: RunSync | None = None) -> FastAPI:
    """The API for ``app``; ``run_sync`` runs blocking work (the daemon's worker pool)."""
    from emaild.http.routes import admin, cases, files, intake

    api = FastAPI(
        title="emaild",
        version="1",
        description="Cases, agent replies and the case lifecycle (README: API).",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    context: dict[str, Any] = {"app": app}
    if run_sync is not None:
        context["run_sync"] = run_sync
    api.state.emaild = ApiContext(**context)
    problems.install(api)
    v1 = APIRouter(prefix=PREFIX)
    for module in (cases, intake, files, admin):
        v1.include_router(module.router)
    api.include_router(v1)
    api.add_middleware(BodyLimit, emaild=app)
    return api
