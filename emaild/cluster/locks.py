"""Cluster-wide locks: work that one process at a time may do (a mailbox, a job).

Several ``emaild run`` processes, on one host or many, share one PostgreSQL.
A lock there is a session-level advisory lock,
``pg_advisory_lock(NAMESPACE, key(name))``, taken on a connection of its own
that this process keeps open while it holds anything. Why advisory locks and
not lease rows: the lock lives exactly as long as the holder's database
session, so a process that dies (SIGKILL, a host power cut once TCP notices)
frees its locks at once, with no lease to run out and no clock to trust; a
waiting process gets it at its next try (every few seconds).

The reverse case, the holder losing its lock connection while it keeps
running, is caught by the heartbeat thread: every ``HEARTBEAT_SECONDS`` it
checks over that connection that the locks are still granted (``pg_locks``)
and refreshes the ``cluster_holders`` rows; if the connection is gone it
drops every lock and sets each one's ``lost`` event, so the mailbox worker
stops at the next message. TCP keepalives and ``tcp_user_timeout``, set on
both ends of the lock connection, bound how long a dead network can hide
either case: the server drops the session of a holder whose host died in
about 11 s, and the holder notices a dead server as fast.

On SQLite (one process) the same API is backed by an in-process table: the
same code paths run, and ``emaild status`` shows the same holders.

Locks are not re-entrant: a name held in this process is refused to a second
caller in this process too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from emaild.clock import utcnow
from emaild.cluster import holders
from emaild.cluster.holders import HEARTBEAT_SECONDS, NAMESPACE, key
from emaild.errors import TransientError
from emaild.store.database import Database

log = structlog.get_logger("emaild.cluster")

# Session settings of the lock connection (all user-settable; TCP only).
SERVER_KEEPALIVE = {
    "tcp_keepalives_idle": 5,
    "tcp_keepalives_interval": 2,
    "tcp_keepalives_count": 3,
    "tcp_user_timeout": 10000,
}


@dataclass
class _Held:
    since: datetime
    lost: threading.Event | None = field(default=None)
    recorded: bool = False  # its cluster_holders row was written


class Cluster:
    """This process's cluster-wide locks on one database (``cluster_for(db)``)."""

    def __init__(self, db: Database, *, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.db = db
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.identity = f"{self.host}:{self.pid}"
        self.heartbeat_seconds = heartbeat_seconds
        self._pg = not db.is_sqlite
        self._mutex = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._conn: Connection | None = None
        self._engine: Any = None
        self._closed = threading.Event()
        self._beater: threading.Thread | None = None

    # --- the API --------------------------------------------------------------------
    def try_acquire(
        self, name: str, lost: threading.Event | None = None, *, record: bool = True
    ) -> bool:
        """Take ``name`` if nobody (here or elsewhere) holds it; never waits.

        ``lost`` is set if the lock is lost later (the lock connection broke).
        ``record``: write its ``cluster_holders`` row now; without, the first
        heartbeat writes it (a job run shorter than a heartbeat costs no write).
        Raises ``TransientError`` when the database cannot be reached.
        """
        with self._mutex:
            if name in self._held or self._closed.is_set():
                return False
            if self._pg and not self._pg_try_lock(name):
                return False
            held = self._held[name] = _Held(since=utcnow(), lost=lost)
        self._start_heartbeat()
        if record:
            try:
                holders.write(self.db, [name], self.identity, self.host, self.pid, utcnow())
                held.recorded = True
            except TransientError as exc:  # the lock is what counts; the row catches up
                log.warning("cluster.holder_row_failed", name=name, error=str(exc))
        log.debug("cluster.acquired", name=name, holder=self.identity)
        return True

    def release(self, name: str) -> None:
        """Let ``name`` go (nothing if not held here)."""
        with self._mutex:
            held = self._held.pop(name, None)
            if held is None:
                return
            if self._pg and self._conn is not None:
                try:
                    unlock = text("SELECT pg_advisory_unlock(:ns, :k)")
                    self._conn.execute(unlock, {"ns": NAMESPACE, "k": key(name)})
                except SQLAlchemyError:
                    self._drop_connection()  # the lock goes with the session
        if held.recorded:
            try:
                holders.remove(self.db, name, self.identity)
            except TransientError as exc:
                log.warning("cluster.holder_row_failed", name=name, error=str(exc))
        log.debug("cluster.released", name=name, holder=self.identity)

    def holds(self, name: str) -> bool:
        """True while this process holds ``name``."""
        with self._mutex:
            return name in self._held

    @contextmanager
    def exclusive(self, name: str, *, record: bool = True) -> Iterator[bool]:
        """Hold ``name`` for the block if nobody else does; yields whether it was taken."""
        got = self.try_acquire(name, record=record)
        try:
            yield got
        finally:
            if got:
                self.release(name)

    def heartbeat(self) -> None:
        """Prove the locks are still held and refresh their rows; lose them if not."""
        with self._mutex:
            held = dict(self._held)
            if not held:
                return
            if self._pg and not self._pg_still_held(list(held)):
                self._lose_all("lock connection lost")
                return
        try:
            holders.write(self.db, list(held), self.identity, self.host, self.pid, utcnow())
        except TransientError as exc:
            log.warning("cluster.heartbeat_failed", error=str(exc))
            return
        for entry in held.values():
            entry.recorded = True
        with self._mutex:  # let go of meanwhile: its release wrote no row to remove
            gone = [n for n, entry in held.items() if self._held.get(n) is not entry]
        for name in gone:
            with contextlib.suppress(TransientError):  # else old by the next sweep
                holders.remove(self.db, name, self.identity)

    def close(self) -> None:
        """Let everything go and stop the heartbeat (process shutdown)."""
        for name in list(self._held):
            self.release(name)
        self._closed.set()
        with self._mutex:
            self._drop_connection()
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
        if self._beater is not None and self._beater is not threading.current_thread():
            self._beater.join(self.heartbeat_seconds + 5)

    # --- PostgreSQL ------------------------------------------------------------------
    def _connection(self) -> Connection:
        if self._conn is None:
            if self._engine is None:
                self._engine = create_engine(
                    self.db.engine.url,
                    poolclass=NullPool,
                    isolation_level="AUTOCOMMIT",
                    connect_args={
                        "connect_timeout": 5,
                        "application_name": f"emaild locks {self.identity}"[:63],
                        # A dead network must not hide a lost lock for long.
                        "keepalives": 1,
                        "keepalives_idle": 5,
                        "keepalives_interval": 2,
                        "keepalives_count": 3,
                        "tcp_user_timeout": 10000,
                        # And the server's side: a holder whose host died (no FIN
                        # ever comes) loses its session, and so its locks, in ~11 s.
                        "options": " ".join(f"-c {k}={v}" for k, v in SERVER_KEEPALIVE.items()),
                    },
                )
            try:
                self._conn = self._engine.connect()
            except SQLAlchemyError as exc:
                raise TransientError(f"lock connection: {exc}") from exc
        return self._conn

    def _pg_try_lock(self, name: str) -> bool:
        for attempt in range(2):  # a connection that died while idle: open a new one
            conn = self._connection()
            try:
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:ns, :k)"), {"ns": NAMESPACE, "k": key(name)}
                ).scalar()
                return bool(got)
            except SQLAlchemyError as exc:
                self._lose_all(f"lock connection lost: {exc}")
                if attempt:
                    raise TransientError(f"lock connection: {exc}") from exc
        return False

    def _pg_still_held(self, names: list[str]) -> bool:
        if self._conn is None:
            return False
        try:
            granted = set(
                self._conn.execute(
                    text(
                        "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND pid = pg_backend_pid() AND classid = :ns AND objsubid = 2"
                    ),
                    {"ns": NAMESPACE},
                ).scalars()
            )
        except SQLAlchemyError:
            return False
        return all(key(n) % 2**32 in granted for n in names)

    def _lose_all(self, why: str) -> None:
        """Every lock is gone with the session (caller holds ``_mutex``)."""
        lost, self._held = self._held, {}
        self._drop_connection()
        for name, held in lost.items():
            log.error("cluster.lock_lost", name=name, holder=self.identity, error=why)
            if held.lost is not None:
                held.lost.set()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # never back to a pool: the session must end
                conn.close()
            except SQLAlchemyError:
                pass

    # --- heartbeat thread ---------------------------------------------------------
    def _start_heartbeat(self) -> None:
        with self._mutex:
            if self._beater is not None:
                return
            self._beater = threading.Thread(
                target=self._beat, name="emaild-cluster-heartbeat", daemon=True
            )
        self._beater.start()

    def _beat(self) -> None:
        while not self._closed.wait(self.heartbeat_seconds):
            try:
                self.heartbeat()
            except Exception as exc:  # never let the thread die: the locks depend on it
                log.error("cluster.heartbeat_failed", error=f"{type(exc).__name__}: {exc}")


_CLUSTERS: weakref.WeakKeyDictionary[Database, Cluster] = weakref.WeakKeyDictionary()
_REGISTRY = threading.Lock()


def cluster_for(db: Database) -> Cluster:
    """The one ``Cluster`` of this process for ``db`` (created on first use)."""
    with _REGISTRY:
        found = _CLUSTERS.get(db)
        if found is None or found.pid != os.getpid():  # a forked child starts its own
            found = _CLUSTERS[db] = Cluster(db)
        return found


def forget(db: Database) -> None:
    """Close this process's ``Cluster`` for ``db``, if any (``App.close``)."""
    with _REGISTRY:
        found = _CLUSTERS.pop(db, None)
    if found is not None and found.pid == os.getpid():
        found.close()
