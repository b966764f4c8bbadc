"""Helpers for the multi-process tests of ``emaild.cluster``: an environment for
``emaild`` subprocesses on a fresh PostgreSQL database, several daemons started at once."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smtp_helpers import DaemonProcess


@contextmanager
def pg_environment(postgres: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for ``emaild`` subprocesses on a fresh PostgreSQL database (dropped after)."""
    name = postgres.create()
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILD_")}
    env.update(
        EMAILD_STATE_DIR=str(state),
        HOME=str(tmp_path),
        EMAILD_SMTP_RELAY="127.0.0.1:9",
        EMAILD_DATABASE_URL=postgres.url(name),
    )
    try:
        yield env
    finally:
        postgres.drop(name)


def start_all(daemons: list[DaemonProcess], timeout: float = 60) -> None:
    """Start every daemon at once (each waits for its READY=1); raise the first failure."""
    errors: list[BaseException] = []

    def start(daemon: DaemonProcess) -> None:
        try:
            daemon.start(timeout)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(d,)) for d in daemons]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    if errors:
        raise errors[0]
