"""The ``cluster_holders`` rows: written by the lock holder, read by ``emaild status``.

A row is written when a lock is taken, refreshed at every heartbeat, and
deleted when the lock is let go. A process that dies leaves its row behind:
``live_holders`` hides rows whose heartbeat is older than ``STALE_AFTER_SECONDS``
and, on PostgreSQL, rows whose advisory lock nobody holds any more (read from
``pg_locks``), so a dead process never shows as holding.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from emaild.store.database import Database
from emaild.store.models import ClusterHolder

# A holder refreshes its rows every HEARTBEAT_SECONDS (emaild.cluster.locks).
HEARTBEAT_SECONDS = 5.0
# Older than this, a row is a dead process's: not shown, and swept by the next heartbeat.
STALE_AFTER_SECONDS = 4 * HEARTBEAT_SECONDS
# The first key of every emaild advisory lock: pg_advisory_lock(NAMESPACE, key(name)).
NAMESPACE = 0x656D6169  # "emai"


def write(db: Database, names: list[str], holder: str, host: str, pid: int, now: datetime) -> None:
    """Say ``holder`` holds ``names`` as of ``now`` (``since`` kept for a name it already had)."""

    def work(session: Session) -> None:
        query = select(ClusterHolder).where(ClusterHolder.name.in_(names))
        rows = {r.name: r for r in session.scalars(query)}
        for name in names:
            row = rows.get(name)
            if row is None:
                session.add(
                    ClusterHolder(
                        name=name, holder=holder, host=host, pid=pid, since=now, heartbeat_at=now
                    )
                )
            elif row.holder != holder:
                # A dead holder's row: the lock is ours now.
                row.holder, row.host, row.pid, row.since = holder, host, pid, now
                row.heartbeat_at = now
            else:
                row.heartbeat_at = now
        stale = now - timedelta(seconds=STALE_AFTER_SECONDS * 3)
        session.execute(delete(ClusterHolder).where(ClusterHolder.heartbeat_at < stale))

    db.run(work, attempts=3)


def remove(db: Database, name: str, holder: str) -> None:
    """``holder`` let ``name`` go (a row someone else wrote meanwhile stays)."""
    db.run(
        lambda session: session.execute(
            delete(ClusterHolder).where(ClusterHolder.name == name, ClusterHolder.holder == holder)
        ),
        attempts=3,
    )


def live_holders(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Who holds what now, for ``emaild status`` (name order)."""
    fresh = now - timedelta(seconds=STALE_AFTER_SECONDS)
    rows = list(
        session.scalars(
            select(ClusterHolder)
            .where(ClusterHolder.heartbeat_at >= fresh)
            .order_by(ClusterHolder.name)
        )
    )
    if session.get_bind().dialect.name == "postgresql":
        granted = {
            int(k)
            for k in session.scalars(
                text(
                    "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid = :ns AND objsubid = 2"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                ),
                {"ns": NAMESPACE},
            )
        }
        rows = [r for r in rows if key(r.name) % 2**32 in granted]
    return [
        {
            "name": r.name,
            "holder": r.holder,
            "host": r.host,
            "pid": r.pid,
            "since": r.since.isoformat(),
            "heartbeat_at": r.heartbeat_at.isoformat(),
        }
        for r in rows
    ]


def key(name: str) -> int:
    """The second (int4) key of ``name``'s advisory lock: a stable 32-bit hash.

    Two names that happened to share a key would share one lock: less
    parallelism, never two holders.
    """
    import zlib

    value = zlib.crc32(name.encode("utf-8"))
    return value - 2**32 if value >= 2**31 else value
