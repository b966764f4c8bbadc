"""A process that runs one singleton ``PeriodicJob`` for a while (``test_cluster_jobs``).

``python cluster_job.py LOG SECONDS``: opens the ``App`` the environment
configures, schedules a ``PeriodicJob`` named "cluster-test" every 0.1 s whose
run writes "start PID T" and "end PID T" lines to LOG around a 0.3 s sleep,
and stops after SECONDS. The host is the smallest one a component needs
(scheduler, worker threads, the app); the job and its lock are the real ones.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from emaild.app import App
from emaild.component import PeriodicJob
from emaild.config import load_config


class Host:
    def __init__(self, app: App) -> None:
        self.app = app
        self.scheduler = AsyncIOScheduler()

    async def run_sync(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)


def main(log: Path, seconds: float) -> None:
    app = App.open(load_config(Path(os.environ["EMAILD_CONFIG"]), dict(os.environ)))

    def run() -> None:
        with log.open("a", encoding="utf-8") as out:
            out.write(f"start {os.getpid()} {time.time():.6f}\n")
        time.sleep(0.3)
        with log.open("a", encoding="utf-8") as out:
            out.write(f"end {os.getpid()} {time.time():.6f}\n")

    async def go() -> None:
        host = Host(app)
        job = PeriodicJob("cluster-test", run, 0.1)
        host.scheduler.start()
        await job.start(host)  # type: ignore[arg-type]
        await asyncio.sleep(seconds)
        await job.stop()
        host.scheduler.shutdown(wait=False)

    asyncio.run(go())
    app.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
