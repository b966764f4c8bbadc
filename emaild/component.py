"""What the daemon runs beside its listeners, and what it offers them.

A ``Component`` (IMAP poller, outbox, release of held mail, ...) is handed a
``Host`` when it starts: the daemon's scheduler and its bounded worker pool.
Components never import the daemon; the daemon's caller decides which run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar

import structlog

from emaild.cluster import cluster_for
from emaild.errors import EmaildError
from emaild.store.database import Database

P = ParamSpec("P")
T = TypeVar("T")


class HostApp(Protocol):
    """What the base classes here need of the daemon's ``App`` (not imported: a cycle)."""

    @property
    def db(self) -> Database: ...


class Host(Protocol):
    """The daemon as a component sees it."""

    @property
    def app(self) -> HostApp:
        """The daemon's ``App``: its database holds the cluster-wide locks."""
        ...

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


class JobComponent:
    """A component that runs ``work`` as one job on the daemon's scheduler.

    ``max_instances=1`` and ``coalesce`` keep runs from overlapping in one
    process; with ``singleton`` (the default) a run also holds the
    cluster-wide lock ``job:<job_id>`` (``emaild.cluster``), so across every
    process on the database one run at a time happens: a process whose run
    comes while another holds it skips that run. A failing run is logged
    (``failed_event``), never raised, and the next run tries again. ``stop``
    removes the job and waits for a run in progress (the daemon bounds the
    wait). A subclass gives ``name``, ``job_id``, ``failed_event``,
    ``trigger()`` and ``work()``; one whose runs may overlap across processes
    (the outbox: each item is claimed on its own) sets ``singleton = False``.
    """

    name = ""
    job_id = ""
    failed_event = ""
    singleton = True

    def __init__(self, app: Any) -> None:
        self.app = app
        self.host: Host | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def trigger(self) -> dict[str, Any]:
        """``add_job`` arguments: the trigger and its fields (``next_run_time``...)."""
        raise NotImplementedError

    async def work(self, host: Host) -> None:
        """One run."""
        raise NotImplementedError

    async def start(self, host: Host) -> None:
        self.host = host
        host.scheduler.add_job(
            self.run_once, id=self.job_id, max_instances=1, coalesce=True, **self.trigger()
        )

    async def run_once(self) -> None:
        """One run of ``work``; errors are logged, never raised."""
        host = self.host
        assert host is not None
        self._idle.clear()
        log = structlog.get_logger(f"emaild.{self.name}")
        lock = f"job:{self.job_id}"
        cluster = cluster_for(host.app.db) if self.singleton else None
        held = False
        try:
            if cluster is not None:
                # No row for a run shorter than a heartbeat: most runs cost no write.
                held = await host.run_sync(lambda: cluster.try_acquire(lock, record=False))
                if not held:
                    log.debug("job.skipped", job=self.job_id, why="running in another process")
                    return
            await self.work(host)
        except EmaildError as exc:  # e.g. the database is down: the next run tries again
            log.warning(self.failed_event, error=str(exc))
        except Exception as exc:
            log.error(self.failed_event, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        finally:
            if held and cluster is not None:
                await host.run_sync(cluster.release, lock)
            self._idle.set()

    async def stop(self) -> None:
        if self.host is not None:
            scheduler: Any = self.host.scheduler
            if scheduler.get_job(self.job_id) is not None:
                scheduler.remove_job(self.job_id)
        await self._idle.wait()


class PeriodicJob(JobComponent):
    """``fn`` in the worker pool every ``seconds`` (the release jobs of held mail)."""

    def __init__(self, name: str, fn: Callable[[], object], seconds: float) -> None:
        super().__init__(None)
        self.name = self.job_id = name
        self.failed_event = f"{name}.failed"
        self.fn = fn
        self.seconds = seconds

    def trigger(self) -> dict[str, Any]:
        return {"trigger": "interval", "seconds": self.seconds}

    async def work(self, host: Host) -> None:
        await host.run_sync(self.fn)
