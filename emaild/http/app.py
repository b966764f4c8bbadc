"""The FastAPI application: routers under ``/api/v1``, problem details, body limit;
``/metrics``, ``/healthz`` and ``/readyz`` at the root.

Web-to-Case (``/web-to-case``) lives beside the API, without a token; its
bodies are streamed (``emaild.http.webform_body`` bounds them per form).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emaild.app import App
from emaild.component import Host
from emaild.http import problems
from emaild.http.context import ApiContext, RunSync
from emaild.http.ops import OpsState
from emaild.http.problems import problem_response

PREFIX = "/api/v1"
WEB_PREFIX = "/web-to-case/"


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed, before parsing."""

    def __init__(self, app: ASGIApp, emaild: App) -> None:
        self.app = app
        self.emaild = emaild

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(WEB_PREFIX):
            await self.app(scope, receive, send)
            return
        # Read per request: a reload (SIGHUP) changes it.
        limit = self.emaild.config.http.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await problem_response(413, f"the body is over {limit} bytes")(scope, receive, send)
                return
        # A chunked body declares no length: count it here, up to the limit, and
        # hand it on whole (the routes read whole JSON bodies anyway).
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                await problem_response(413, f"the body is over {limit} bytes")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(app: App, run_sync: RunSync | None = None, host: Host | None = None) -> FastAPI:
    """The API for ``app``; ``run_sync`` runs blocking work (the daemon's worker pool).

    ``/metrics``, ``/healthz`` and ``/readyz`` are served at the root too, unless
    ``[metrics] listen`` gives them a listener of their own (``create_ops_app``).
    """
    from emaild.http.routes import (
        admin,
        cases,
        files,
        intake,
        ops,
        privacy,
        reports,
        webform,
        webhooks,
    )
    from emaild.http.webform_gate import RateGate, WebState

    api = FastAPI(
        title="emaild",
        version="1",
        description="Cases, agent replies and the case lifecycle (README: API).",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
    )
    _install_context(api, app, run_sync, host)
    problems.install(api)
    v1 = APIRouter(prefix=PREFIX)
    for module in (cases, intake, files, admin, privacy, reports, webhooks):
        v1.include_router(module.router)
    api.include_router(v1)
    if not app.config.metrics.listen:
        api.include_router(ops.router)
    api.state.webform = WebState()
    api.include_router(webform.router)
    api.add_middleware(RateGate, emaild=app, state=api.state.webform)
    api.add_middleware(BodyLimit, emaild=app)
    return api


def create_ops_app(app: App, run_sync: RunSync | None = None, host: Host | None = None) -> FastAPI:
    """Only ``/metrics``, ``/healthz`` and ``/readyz``: for ``[metrics] listen``."""
    from emaild.http.routes import ops

    api = FastAPI(title="emaild operations", openapi_url=None, docs_url=None, redoc_url=None)
    _install_context(api, app, run_sync, host)
    problems.install(api)
    api.include_router(ops.router)
    api.add_middleware(BodyLimit, emaild=app)
    return api


def _install_context(api: FastAPI, app: App, run_sync: RunSync | None, host: Host | None) -> None:
    context: dict[str, Any] = {"app": app, "ops": OpsState.build(app, host)}
    if run_sync is not None:
        context["run_sync"] = run_sync
    api.state.emaild = ApiContext(**context)
