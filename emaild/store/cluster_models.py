"""The ``cluster_holders`` table: who holds which cluster-wide lock, for ``emaild status``.

Re-exported by ``emaild.store.models``; written only by ``emaild.cluster``. The
lock itself is not this row (on PostgreSQL it is an advisory lock, see
``emaild.cluster.locks``): the row says who holds it, since when, and when the
holder last proved it is alive (``heartbeat_at``). A row whose heartbeat is
old belongs to a dead process and is not shown as holding.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer
from sqlalchemy.orm import Mapped, mapped_column

from emaild.store.base import Base
from emaild.store.safetext import SafeString


class ClusterHolder(Base):
    """One held lock: ``imap:support``, ``job:retention-purge``..."""

    __tablename__ = "cluster_holders"

    name: Mapped[str] = mapped_column(SafeString(255), primary_key=True)
    # "host:pid" of the holding process (the same form as outbox/webhook claims).
    holder: Mapped[str] = mapped_column(SafeString(128))
    host: Mapped[str] = mapped_column(SafeString(255))
    pid: Mapped[int] = mapped_column(Integer)
    since: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
