"""A fresh, migrated PostgreSQL database for each test, made ahead of time.

Each test worker migrates one template database, and every test gets its own
copy (``CREATE DATABASE ... TEMPLATE``), dropped after it. A copy costs the
server about 0.4 s, mostly writing and syncing the new database's files: paid
in the test's setup, that was a large share of the suite's time. A background
thread now keeps ``AHEAD`` copies ready and drops used ones, so the copying
overlaps with the tests running. Nothing is reused: every database a test
sees is a new copy of the freshly migrated template.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from typing import Any

AHEAD = 2  # copies kept ready; each is a few MB on the server


class Postgres:
    """One worker's template database and its stream of fresh copies."""

    def __init__(self, admin_url: str, owner: int) -> None:
        self.admin_url = admin_url
        self.error = ""
        self.template = f"emaild_tpl_{owner}_{uuid.uuid4().hex[:6]}"
        self.engine: Any = None
        self._ready: queue.Queue[str | BaseException] = queue.Queue(maxsize=AHEAD)
        self._drops: queue.Queue[str | None] = queue.Queue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from sqlalchemy import create_engine, text

        try:
            self.engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with self.engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.template}"'))
        except Exception as exc:
            self.error = f"PostgreSQL at {self.admin_url} unavailable: {exc}"
            return
        from emaild.store.database import Database

        db = Database(self.url(self.template))
        db.migrate()
        db.dispose()
        self._thread = threading.Thread(target=self._work, name="pg-databases", daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def create(self) -> str:
        """A new database copied from the migrated template; ``drop`` it when done."""
        made = self._ready.get(timeout=120)
        self._wake.set()
        if isinstance(made, BaseException):
            raise made
        return made

    def drop(self, name: str) -> None:
        """Drop ``name`` in the background (it is never handed out again)."""
        self._drops.put(name)
        self._wake.set()

    def stop(self) -> None:
        if self._thread is not None:
            self._drops.put(None)
            self._wake.set()
            self._thread.join(120)
        if self.engine is not None and not self.error:
            while not self._ready.empty():
                made = self._ready.get_nowait()
                if isinstance(made, str):
                    self._drop_now(made)
            self._drop_now(self.template)
            self.engine.dispose()

    def _work(self) -> None:
        """Drop what was used, then top the ready copies up; sleep when neither is due."""
        while True:
            self._wake.clear()
            while True:
                try:
                    name = self._drops.get_nowait()
                except queue.Empty:
                    break
                if name is None:
                    return
                with contextlib.suppress(Exception):  # else left on the server, harmlessly
                    self._drop_now(name)
            if self._ready.full():
                self._wake.wait(1)
                continue
            try:
                self._ready.put(self._create_now())
            except Exception as exc:  # the test that takes it fails with this
                self._ready.put(exc)

    def _create_now(self) -> str:
        from sqlalchemy import text

        name = f"emaild_t_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        return name

    def _drop_now(self, name: str) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
