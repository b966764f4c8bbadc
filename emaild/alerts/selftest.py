"""Scheduled forwarding self-tests (``[[forwarding_test]]``): the round trip of
``emaild address test-forwarding`` every ``interval_minutes``, per address.

Each test runs in a thread of its own (it waits for the message to come back,
up to ``timeout_seconds``), never in the daemon's worker pool. Its result is
the ``emaild_forwarding_test_*`` metrics and the health of the channel
``fwdtest:ADDRESS``, so a failing test is alerted on like a failing mailbox.
The first test runs one interval after start. With several processes on one
database a test runs in one of them at a time (the cluster-wide lock
``job:fwdtest:ADDRESS``, ``emaild.cluster``); the others skip that round.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog

from emaild.channels.health import ChannelHealth
from emaild.cluster import cluster_for
from emaild.component import Host
from emaild.config import ForwardingTestConfig
from emaild.errors import EmaildError
from emaild.observe import metrics
from emaild.verification.forwarding import run_forwarding_test

if TYPE_CHECKING:
    from emaild.app import App

log = structlog.get_logger("emaild.alerts")


class SelfTestComponent:
    """Runs the configured forwarding self-tests on the daemon's scheduler."""

    name = "selftest"

    def __init__(self, app: App) -> None:
        self.app = app
        self.tests = list(app.config.forwarding_test)
        self.health = {
            t.address: ChannelHealth(f"fwdtest:{t.address}", "fwdtest") for t in self.tests
        }
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emaild-selftest")
        self.stopping = threading.Event()
        self.host: Host | None = None

    async def start(self, host: Host) -> None:
        self.host = host
        for test in self.tests:
            host.scheduler.add_job(
                self.run_once,
                "interval",
                args=[test],
                seconds=test.interval_minutes * 60,
                id=f"fwdtest:{test.address}",
                max_instances=1,
                coalesce=True,
            )

    async def run_once(self, test: ForwardingTestConfig) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.run_test, test)
        except RuntimeError:  # the executor is shut down: stopping
            return

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def _clock(self) -> float:
        # Once stopping, the test's deadline has passed: it returns at once.
        return math.inf if self.stopping.is_set() else time.monotonic()

    def run_test(self, test: ForwardingTestConfig) -> None:
        """One self-test (blocking), unless another process is running it now."""
        try:
            name = f"job:fwdtest:{test.address}"
            with cluster_for(self.app.db).exclusive(name, record=False) as mine:
                if mine:
                    self._run_test(test)
        except EmaildError as exc:  # the database is down: the next round tries again
            log.warning("selftest.skipped", address=test.address, error=str(exc))

    def _run_test(self, test: ForwardingTestConfig) -> None:
        """One self-test (blocking); its outcome goes to the metrics and channel health."""
        health = self.health[test.address]
        try:
            report = run_forwarding_test(
                self.app,
                test.address,
                timeout=test.timeout_seconds,
                sleep=self._sleep,
                monotonic=self._clock,
            )
        except EmaildError as exc:
            ok, delay, error = False, None, str(exc)
        else:
            ok, delay = report.ok, report.delay_seconds
            error = "" if ok else "; ".join(report.checked[:2])
        if self.stopping.is_set():
            return  # cut short: no verdict
        metrics.forwarding_test(test.address, ok=ok, finished=time.time(), round_trip=delay)
        if ok:
            health.success()
            log.info("selftest.passed", address=test.address, round_trip_seconds=delay)
        else:
            health.failure(f"forwarding test failed: {error}")
            log.warning("selftest.failed", address=test.address, error=error)
        health.flush(self.app.db)

    async def stop(self) -> None:
        self.stopping.set()
        if self.host is not None:
            scheduler: Any = self.host.scheduler
            for test in self.tests:
                if scheduler.get_job(f"fwdtest:{test.address}") is not None:
                    scheduler.remove_job(f"fwdtest:{test.address}")
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown)


def selftest_component(app: App) -> SelfTestComponent | None:
    """``emaild run`` factory: a component when any ``[[forwarding_test]]`` is configured."""
    return SelfTestComponent(app) if app.config.forwarding_test else None
