"""What the daemon runs beside its listeners, and what it offers them.

A ``Component`` (IMAP poller, outbox, release of held mail, ...) is handed a
``Host`` when it starts: the daemon's scheduler and its bounded worker pool.
Components never import the daemon; the daemon's caller decides which run.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Host(Protocol):
    """The daemon as a component sees it."""

    @property
    def scheduler(self) -> Any:
        """The APScheduler ``AsyncIOScheduler`` of the daemon."""
        ...

    async def run_sync(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``fn`` in the daemon's bounded worker pool."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> Any:
        """Start a background task that lives until shutdown."""
        ...

    def problems(self) -> list[str]:
        """Why the daemon cannot take mail now (a listener down, stopping); empty if it can."""
        ...

    def channel_names(self) -> set[str]:
        """The ``channel_status`` names of the channels this daemon watches (alerts)."""
        ...


class Component(Protocol):
    """Something the daemon runs beside the listeners."""

    name: str

    async def start(self, host: Host) -> None:
        """Start work: add scheduler jobs, open connections. Called after listeners bind."""
        ...

    async def stop(self) -> None:
        """Finish or abandon work in progress; called once on shutdown."""
        ...
