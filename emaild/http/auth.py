"""Bearer tokens and scopes: ``read`` < ``write`` < ``admin``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from emaild.casework.tokens import allows, find_token
from emaild.http.context import ApiContext, api
from emaild.http.problems import Problem


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name is the actor in case events."""

    name: str
    scope: str


def _lookup(ctx: ApiContext, secret: str) -> Principal | None:
    with ctx.app.db.session(readonly=True) as session:
        row = find_token(session, secret)
        return Principal(row.name, row.scope) if row is not None else None


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits tokens with ``scope`` or more (401 none, 403 too little)."""

    async def check(request: Request, ctx: Annotated[ApiContext, Depends(api)]) -> Principal:
        header = request.headers.get("authorization", "")
        kind, _, secret = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="emaild"'}
        if kind.lower() != "bearer" or not secret.strip():
            raise Problem(401, "a Bearer token is needed (emaild token add)", challenge)
        principal = await ctx.run_sync(_lookup, ctx, secret.strip())
        if principal is None:
            raise Problem(401, "unknown or revoked token", challenge)
        if not allows(principal.scope, scope):
            raise Problem(403, f"this needs a {scope} token; {principal.name} is {principal.scope}")
        return principal

    return check


READ = Depends(require("read"))
WRITE = Depends(require("write"))
ADMIN = Depends(require("admin"))
