"""What every route needs: the ``App`` and the daemon's worker pool."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fastapi import Request

from emaild.app import App

if TYPE_CHECKING:
    from emaild.http.ops import OpsState

T = TypeVar("T")


class RunSync(Protocol):
    """``Host.run_sync``: blocking work in the daemon's bounded worker pool."""

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...


# Without a daemon (an embedding test or tool): asyncio's default pool.
async def _default_run_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(fn, *args, **kwargs)
    )


@dataclass
class ApiContext:
    """Held in ``app.state.emaild``; ``run_sync`` is the daemon's ``Host.run_sync``."""

    app: App
    run_sync: RunSync = _default_run_sync
    # /metrics and /readyz state (emaild.http.ops), made by the app factory.
    ops: OpsState | None = None

    def now(self) -> datetime:
        return self.app.pipeline.clock()


def api(request: Request) -> ApiContext:
    """FastAPI dependency: the context of the running API."""
    ctx = request.app.state.emaild
    assert isinstance(ctx, ApiContext)
    return ctx
