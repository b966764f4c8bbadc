"""The daemon's webhook component: claim due deliveries, POST them, record the outcome.

One background task per daemon. It looks for due deliveries when a
transaction of this process commits new ones (``emaild.webhooks.notify``) and
every ``webhooks.poll_interval_seconds`` (retries that come due, events of
other processes), with a read-only query; claims up to ``concurrency`` minus
those in flight (a committed lease, see ``emaild.webhooks.queue``) and POSTs
each in its own task on the event loop (httpx, one kept-alive connection per
client, see ``sender.Clients``); database work runs in the daemon's worker
pool. Finished attempts are stored in batches by a second task, which claims
the next due deliveries in the same transaction (the next event of those
cases may now go): on SQLite every transaction is a turn of the single writer
the mail pipeline waits for, so the component takes as few turns as it can.

On start, claims left by a dead process on this host are released (a crash
or SIGKILL must not hold events back for a whole lease). On stop, no new
claims are made and deliveries in flight are given until the daemon's
deadline; an unfinished one keeps its claim, which lapses, and is sent again:
receivers deduplicate by ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.orm import Session

from emaild.clock import utcnow
from emaild.component import Host
from emaild.config import WebhooksConfig
from emaild.errors import EmaildError
from emaild.webhooks import delivery, notify, queue
from emaild.webhooks.sender import Clients, Result, post, public_target_problem

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.webhooks")


class WebhookComponent:
    """Delivers the webhook outbox from inside ``emaild run``."""

    name = "webhooks"

    def __init__(self, app: App) -> None:
        self.app = app
        self.host: Host | None = None
        self.worker = queue.worker_name()
        self.rng = random.Random()
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._finished: list[tuple[queue.Claimed, Result, asyncio.Future[None]]] = []
        self._record_wake = asyncio.Event()
        self._task: Any = None
        self._recorder_task: Any = None
        self._committed: Any = None  # the commit listener (emaild.webhooks.notify)

    @property
    def settings(self) -> WebhooksConfig:
        return self.app.config.webhooks

    def lease(self) -> float:
        """How long a claim holds: the attempt's timeout with a wide margin."""
        return max(30.0, self.settings.timeout_seconds * 3)

    async def start(self, host: Host) -> None:
        self.host = host
        self.clients = Clients(self.settings.timeout_seconds, self.settings.concurrency)
        loop = asyncio.get_running_loop()

        def committed() -> None:  # from the committing thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: stopping anyway
                loop.call_soon_threadsafe(self._wake.set)

        self._committed = committed
        notify.subscribe(committed)
        try:
            freed = await host.run_sync(self.app.db.run, partial(queue.release_dead, now=utcnow()))
            if freed:
                log.info("webhooks.claims_released", deliveries=freed)
        except EmaildError as exc:
            log.warning("webhooks.release_failed", error=str(exc))
        self._task = host.spawn(self._run(), "webhooks")
        self._recorder_task = host.spawn(self._recorder(), "webhooks-recorder")

    async def _run(self) -> None:
        assert self.host is not None
        while not self._stopping:
            self._wake.clear()
            try:
                claimed = await self._claim()
            except EmaildError as exc:  # the database is down: try again later
                log.warning("webhooks.claim_failed", error=str(exc))
                claimed = 0
            except Exception as exc:
                log.error(
                    "webhooks.claim_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc
                )
                claimed = 0
            if claimed and len(self._inflight) < self.settings.concurrency:
                continue  # more may be due right away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_seconds)

    async def _claim(self) -> int:
        assert self.host is not None
        free = self.settings.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        now = utcnow()

        def look() -> bool:
            with self.app.db.session(readonly=True) as session:
                return queue.any_due(session, now)

        if not await self.host.run_sync(look):
            return 0
        work = partial(queue.claim_due, worker=self.worker, now=now, lease=self.lease(), limit=free)
        items = await self.host.run_sync(self.app.db.run, work)
        self._launch(items)
        return len(items)

    def _launch(self, items: list[queue.Claimed]) -> None:
        for item in items:
            task = asyncio.get_running_loop().create_task(self._deliver(item))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(self, item: queue.Claimed) -> None:
        """POST one delivery; its outcome is stored by the recorder (batched)."""
        settings = self.settings
        try:
            problem = ""
            if item.source != "config" and not settings.allow_private:
                problem = await public_target_problem(item.url)
            if problem:
                result = Result(None, problem, 0)
            else:
                async with self.clients.lease(item.url) as client:
                    result = await post(
                        client,
                        item.url,
                        item.secret,
                        item.event_uid,
                        item.body,
                        settings.timeout_seconds,
                    )
        except Exception as exc:
            # Unexpected (a bug, or a target httpx cannot even try): recorded as a
            # failed attempt like any other, so backoff, giving up and the failing
            # alert apply and the case's later events are not held back for ever.
            log.error("webhooks.delivery_error", delivery=item.id, error=repr(exc), exc_info=exc)
            result = Result(None, f"{type(exc).__name__}: {exc}"[:500], 0)
        finished = asyncio.get_running_loop().create_future()
        self._finished.append((item, result, finished))
        self._record_wake.set()
        await finished  # in flight until stored: the case's next event waits for it

    async def _recorder(self) -> None:
        """Store finished attempts, all that are waiting in one transaction."""
        assert self.host is not None
        while True:
            await self._record_wake.wait()
            self._record_wake.clear()
            batch, self._finished = self._finished, []
            if not batch:
                if self._stopping and not self._inflight:
                    return
                continue
            # The batch's slots are free once it is stored: fill them in the same turn.
            free = 0 if self._stopping else self.settings.concurrency - len(self._inflight)
            work = partial(
                self._store,
                done=[(item, result) for item, result, _ in batch],
                now=utcnow(),
                free=free + len(batch),
            )
            claimed: list[queue.Claimed] = []
            try:
                outcomes, claimed = await self.host.run_sync(self.app.db.run, work, attempts=3)
            except Exception as exc:  # not stored: the claims lapse, the POSTs are repeated
                log.warning("webhooks.record_failed", error=f"{type(exc).__name__}: {exc}")
                outcomes = ["unrecorded"] * len(batch)
                self._wake.set()  # the claim loop fills the free slots
            for (item, result, finished), outcome in zip(batch, outcomes, strict=True):
                if not finished.done():
                    finished.set_result(None)
                if outcome != queue.DELIVERED:
                    log.info(
                        "webhooks.not_delivered",
                        delivery=item.id,
                        webhook=item.subscription,
                        webhook_id=item.event_uid,
                        outcome=outcome,
                        status=result.status,
                        error=result.error,
                        attempts=item.attempts + 1,
                    )
            self._launch(claimed)

    def _store(
        self,
        session: Session,
        done: list[tuple[queue.Claimed, Result]],
        now: datetime,
        free: int,
    ) -> tuple[list[str], list[queue.Claimed]]:
        """Record ``done`` and claim up to ``free`` due deliveries, in one transaction."""
        settings = self.settings
        outcomes = delivery.record_many(session, done, self.worker, now, settings, self.rng)
        if free <= 0:
            return outcomes, []
        lease = self.lease()
        return outcomes, queue.claim_due(session, self.worker, now, lease=lease, limit=free)

    async def stop(self) -> None:
        """No new claims; wait for deliveries in flight (the daemon bounds the wait)."""
        self._stopping = True
        if self._committed is not None:
            notify.unsubscribe(self._committed)
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._record_wake.set()
        if self._recorder_task is not None:
            await self._recorder_task
        await self.clients.aclose()


def webhook_component(app: App) -> WebhookComponent:
    """``COMPONENTS`` factory: always runs (subscriptions may be added at run time)."""
    return WebhookComponent(app)
